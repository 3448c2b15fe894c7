"""CLI for ``micota train`` (SFT; also runs under ``torchrun --nproc_per_node N -m micota train ...``)."""

from __future__ import annotations

import typer

from micota.cli._auto import config_command


def _train(cfg):  # noqa: ANN001, ANN202
    """Supervised fine-tuning (full or LoRA) of BASE, or of a random init of --from-config, on an SFT dataset."""
    from micota.training import train

    return train(cfg)


def register(app: typer.Typer) -> None:
    from micota.training.config import TrainConfig

    config_command(app, "train", TrainConfig, _train, positional=("base",))
