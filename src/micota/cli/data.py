"""CLI for the data stages: ``micota filter``, ``micota bpc``, ``micota stats``."""

# no `from __future__ import annotations`: the stats options evaluate StatsConfig defaults at definition

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from micota.cli._auto import config_command, help_default
from micota.config import load_config


def _print_json(result: dict) -> None:
    typer.echo(json.dumps(result, indent=2, default=str))


def _filter(cfg):  # noqa: ANN001, ANN202
    """Build an SFT dataset from samples: correct, finished on EOS, under --max-tokens, per-problem selection, deduped."""
    from micota.filtering import filter_samples

    return filter_samples(cfg)


def _bpc(cfg):  # noqa: ANN001, ANN202
    """Bits per character of each completion under MODEL given its rendered prompt (batched, length-sorted)."""
    from micota.scoring.bpc import compute_bpc

    return compute_bpc(cfg)


def register(app: typer.Typer) -> None:
    from micota.data.stats import StatsConfig
    from micota.filtering import FilterConfig
    from micota.scoring.bpc import BpcConfig

    config_command(app, "filter", FilterConfig, _filter, positional=("samples",), flags={"mode": "grade_mode"})
    config_command(app, "bpc", BpcConfig, _bpc, positional=("model",), on_result=_print_json)

    @app.command("stats")
    def stats(
        inputs: Annotated[list[str], typer.Argument(help="Datasets (dir with data.jsonl, or .jsonl) or samples dirs to compare", show_default=False)],
        tokenizer: Annotated[Optional[str], typer.Option(help="Tokenizer model spec for token counts"
                                                         + help_default(StatsConfig.model_fields["tokenizer"].default))] = None,
        out: Annotated[Optional[str], typer.Option(help="Output directory (stats.json, stats.md, lengths.png, manifest.json); "
                                                   "omit to print stats.json")] = None,
        labels: Annotated[Optional[str], typer.Option(help="Column labels, one per input (comma-separated; default: the input names)")] = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a finished --out made with another config (or recompute it).")] = False,
        config_file: Annotated[Optional[Path], typer.Option("--config", help="YAML file with these keys (flags win)")] = None,
    ) -> None:
        """Token/character lengths, reflection-marker rate, repeated n-grams and truncation rate, side by side."""
        from micota.data.stats import dataset_stats
        from micota.rerun import check_rerun

        lab = [x.strip() for x in labels.split(",") if x.strip()] if labels else None
        cfg = load_config(StatsConfig, config_file, inputs=inputs, tokenizer=tokenizer, out=out, labels=lab)
        if check_rerun(cfg.out, cfg, stage="stats", overwrite=overwrite):
            typer.echo(cfg.out)
            return
        from micota.io import call_locked

        result = call_locked(dataset_stats, cfg)  # one writer per output
        if out is None and cfg.out is None:
            _print_json(result)
        else:
            typer.echo(cfg.out)
