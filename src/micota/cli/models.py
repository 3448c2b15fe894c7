"""``micota models …``: prepare the embedded default model."""

from __future__ import annotations

from typing import Annotated

import typer

from micota.models.load import DEFAULT_MODEL, DEFAULT_MODELS


def register(app: typer.Typer) -> None:
    models = typer.Typer(help="Model utilities.", no_args_is_help=True)

    @models.command("prepare")
    def prepare(alias: Annotated[str, typer.Argument(help=f"Default model alias ({', '.join(DEFAULT_MODELS)}).")] = DEFAULT_MODEL) -> None:
        """Convert an embedded default model (GGUF in a PyPI package) once into a safetensors folder; print it."""
        from micota.models import prepare_default

        typer.echo(str(prepare_default(alias)))

    app.add_typer(models, name="models")
