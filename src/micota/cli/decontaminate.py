"""``micota decontaminate``: drop training problems that share an n-gram with a benchmark."""

from __future__ import annotations

import typer

from micota.cli._auto import config_command


def _run(cfg):
    from micota.data.decontaminate import decontaminate

    return decontaminate(cfg)


def _print(out) -> None:
    from micota.io import read_json

    r = read_json(out / "decontamination.json")
    per = ", ".join(f"{b}: {n}" for b, n in r["flagged_by_benchmark"].items())
    typer.echo(f"{out}: {r['flagged']} of {r['rows']} rows share a {r['ngram']}-gram with a benchmark ({per}); "
               f"{r['dropped']} dropped, {r['kept']} kept")


def register(app: typer.Typer) -> None:
    from micota.data.decontaminate import DecontaminateConfig

    config_command(app, "decontaminate", DecontaminateConfig, _run, positional=("data",), on_result=_print,
                   help="Flag training problems sharing an n-gram with benchmark problems; drop (or keep and mark) them.")
