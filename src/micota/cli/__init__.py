"""The ``micota`` command line: a thin typer app over library functions.

Each stage module family registers its commands in a small file here (``cli/<area>.py``); this
module assembles them. :func:`main` owns the exit codes:

- 0: done (or skipped because the output is already complete);
- 2: bad input or a usage error (unknown flag or command, bad value, missing argument) — one
  ``error:`` line on stderr, never a traceback, with "did you mean" for a near miss;
- 130: interrupted (Ctrl-C) — one line ``interrupted — rerun the same command to resume (k/N done)``.

Help texts are plain (no rich markup), so ``[default: 1]`` and ``[first|shortest|all]`` show.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from typing import Annotated, Optional

import typer

from micota import __version__
from micota.errors import UserError, os_error_line


def thread_default(ncpu: int | None = None, load1: float | None = None) -> int | None:
    """Torch threads for this run, or None for torch's own default (one per core).

    Measured in ``benchmarks/threads.py`` (BENCHMARKS.md): beside other work, torch's default
    threads oversubscribe the cores and spin — an eval took 294 s with them and 17 s with one
    thread, at 7x less CPU time. So when the 1-minute load average says other processes are
    running, micota uses the cores left over (at least 1); on an idle machine it keeps torch's
    default. ``OMP_NUM_THREADS`` or ``MICOTA_THREADS`` (a number, or ``torch``) override it."""
    if ncpu is None:
        ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    load1 = os.getloadavg()[0] if load1 is None else load1
    busy = int(load1 + 0.5)
    return None if busy == 0 else max(1, ncpu - busy)


_threads: dict[str, int] = {}


def apply_thread_defaults(env: "os._Environ[str] | dict[str, str]" = os.environ) -> None:
    """Pick this process's torch thread count (see :func:`thread_default`); set after torch loads.

    Only this process: child launchers (torchrun, accelerate) choose their own."""
    choice = env.get("MICOTA_THREADS", "").strip().lower()
    if choice == "torch" or "OMP_NUM_THREADS" in env:
        return
    if choice:
        if not choice.isdigit() or int(choice) < 1:
            print(f"error: MICOTA_THREADS={choice!r}: expected a positive integer or 'torch'", file=sys.stderr)
            sys.exit(2)
        _threads["n"] = int(choice)
        return
    n = thread_default()
    if n is not None:
        _threads["n"] = n


def _set_torch_threads() -> None:
    """Apply the chosen thread count now if torch is loaded, else the moment it is imported (most
    commands import torch lazily, inside the stage function)."""
    if "n" not in _threads:
        return
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(_threads["n"])
    elif not any(isinstance(f, _TorchThreads) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchThreads())


class _TorchThreads:
    """A one-shot import hook: when ``torch`` is first imported, set its thread count right after."""

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001 — importlib's finder protocol
        if name != "torch":
            return None
        sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec("torch")
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_set(module):  # noqa: ANN001
            exec_module(module)
            module.set_num_threads(_threads["n"])

        spec.loader.exec_module = exec_then_set
        return spec


app = typer.Typer(
    name="micota",
    help="Distil long chain-of-thought math reasoning into small models (MiCoTA).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"micota {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """Distil long chain-of-thought math reasoning into small models (MiCoTA)."""


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
    apply_thread_defaults()
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(app)
    _set_torch_threads()  # now if a command module imported torch, else when torch is imported


_register_all()


def _usage_message(e: Exception) -> str:
    """One line for a click/typer usage error, with a "did you mean" where click knows candidates."""
    msg = e.format_message() if hasattr(e, "format_message") else str(e)
    possibilities = getattr(e, "possibilities", None)
    option = getattr(e, "option_name", None)
    if option and possibilities is not None:
        close = difflib.get_close_matches(option, list(possibilities), n=1, cutoff=0.5)
        msg = f"no such option {option}" + (f"; did you mean {close[0]}?" if close else "")
    elif msg.startswith("No such command"):
        ctx = getattr(e, "ctx", None)
        group = getattr(ctx, "command", None)
        names = list(getattr(group, "commands", {}) or {})
        word = msg.split("'")[1] if msg.count("'") >= 2 else ""
        close = difflib.get_close_matches(word, names, n=1, cutoff=0.5)
        msg = f"no such command {word!r}" + (f"; did you mean {close[0]!r}?" if close else
                                               f" (commands: {', '.join(sorted(names))})")
    cmd = getattr(getattr(e, "ctx", None), "command_path", None)
    hint = f" (see {cmd} --help)" if cmd and "did you mean" not in msg else ""
    return " ".join((msg + hint).split())


def _is_usage_error(e: BaseException) -> bool:
    from typer.exceptions import TyperException

    try:
        import click
        click_exc: tuple[type, ...] = (click.ClickException,)
    except ImportError:  # pragma: no cover - typer ships its own click
        click_exc = ()
    return isinstance(e, (TyperException, *click_exc))


def main(argv: list[str] | None = None) -> None:
    from micota.progress import interrupted_line

    try:
        rv = app(args=argv, prog_name="micota", standalone_mode=False)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print(interrupted_line(), file=sys.stderr)
        sys.exit(130)
    except OSError as e:  # read-only or full disk, a file where a directory belongs: one line, exit 2
        print(f"error: {os_error_line(e)}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:
        from micota.io import write_error

        if (failed := write_error(e)) is not None:  # torch/safetensors reporting a full or read-only disk
            print(f"error: {os_error_line(failed)}", file=sys.stderr)
            sys.exit(2)
        if not _is_usage_error(e):
            raise
        if type(e).__name__ == "NoArgsIsHelpError":  # `micota` or `micota world` alone: the help, then the error
            ctx = getattr(e, "ctx", None)
            if ctx is not None:
                print(ctx.get_help(), file=sys.stderr)
            print("error: give a command", file=sys.stderr)
            sys.exit(2)
        print(f"error: {_usage_message(e)}", file=sys.stderr)
        sys.exit(2)
    # typer returns an exit code instead of raising when a command exits early; Ctrl-C becomes 130
    if isinstance(rv, int) and rv != 0:
        if rv == 130:
            print(interrupted_line(), file=sys.stderr)
        sys.exit(rv)
    sys.exit(0)
