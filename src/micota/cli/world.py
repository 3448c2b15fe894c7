"""``micota world build|pretrain|show``: the miniature world (see :mod:`micota.data.world`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from micota.cli._auto import config_command


def _show(world: Path, n: int = 2) -> None:
    """Print a few problems, each trace style of the first one, and the length statistics."""
    from micota.data.world import load_world
    from micota.data.world.traces import STYLES, write_trace
    from micota.io import read_json

    w = load_world(world)
    info = read_json(Path(world) / "world.json")
    for split, ps in w.problems.items():
        typer.echo(f"## {split} ({len(ps)} problems)")
        for p in ps[:n]:
            typer.echo(f"- [{p.id}] {p.problem}  -> {p.answer}")
    p = w.problems["train"][0]
    for style in STYLES:
        text = write_trace(style, p.meta, seed=w.config.seed, slip_rate=w.slip_rate, problem_id=p.id)
        typer.echo(f"\n## {style} trace of {p.id}\n{text}")
    typer.echo("\n## lengths (world tokenizer, mean tokens per completion)")
    for split, st in info["lengths"].items():
        typer.echo(f"{split}: short {st['short']['mean_tokens']}, mid {st['mid']['mean_tokens']}, "
                   f"long {st['long']['mean_tokens']}; long:short = {st['long_short_ratio']}x, mid:short = {st['mid_short_ratio']}x")
    typer.echo(f"params: student {info['params']['student']:,}, ta {info['params']['ta']:,}; vocab {info['vocab_size']}")
    typer.echo(f"long traces with a corrected slip: {info['long_slips']['traces_with_a_slip']:.0%}")


def register(app: typer.Typer) -> None:
    from micota.data.world.build import WorldConfig, build_world
    from micota.data.world.pretrain import PretrainConfig, pretrain_bases

    world_app = typer.Typer(help="The miniature world: arithmetic word problems, oracle teacher, tiny models.",
                            no_args_is_help=True)
    config_command(world_app, "build", WorldConfig, build_world, stage="world",
                   help="Build a world: problems (train, dev, test, hard), oracle traces, the bases' corpus, tokenizer, model configs.")
    config_command(world_app, "pretrain", PretrainConfig, pretrain_bases, positional=("world",),
                   help="Train the System-1 bases (student, TA) from random init on the world's corpus (reuses a shipped or cached set with the same key).")

    @world_app.command("show")
    def show(world: Annotated[Path, typer.Argument(help="World directory")],
             n: Annotated[int, typer.Option(help="Problems to list per split")] = 2) -> None:
        """Show a few problems, each trace style and the long:short length ratio."""
        _show(world, n)

    app.add_typer(world_app, name="world")
