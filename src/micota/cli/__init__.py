"""The ``micota`` command line: a thin typer app over library functions.

Each stage module family registers its commands in a small file here (``cli/<area>.py``); this
module assembles them. :func:`main` turns :class:`micota.errors.UserError` (and config validation
errors) into one line on stderr and exit code 2.
"""

from __future__ import annotations

import importlib
import sys

import typer

from micota.errors import UserError, os_error_line

app = typer.Typer(
    name="micota",
    help="Distil long chain-of-thought math reasoning into small models (MiCoTA).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Command modules, each exposing ``register(app)``.
_COMMAND_MODULES = [
    "micota.cli.models",
    "micota.cli.eval",
    "micota.cli.data",
    "micota.cli.decontaminate",
    "micota.cli.merge",
    "micota.cli.train",
    "micota.cli.world",
    "micota.cli.pipeline",
]


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_all()


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, standalone_mode=False)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as e:  # read-only or full disk, a file where a directory belongs: one line, exit 2
        print(f"error: {os_error_line(e)}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:  # click usage errors: one line, exit 2
        import click

        if isinstance(e, click.ClickException):
            print(f"error: {e.format_message()}", file=sys.stderr)
            sys.exit(2)
        raise
    sys.exit(0)
