"""``python -m micota.pipeline.exec KIND CONFIG.json [--inputs DIR ...] [--task K | --finish]``: run one stage.

This is the one entry every executor runs a stage through: the ``local`` executor spawns it for each
stage that loads a model (so GPU memory and parallel state die with the child), launchers
(``accelerate launch``/``torchrun``, also under ``srun``) start it once per rank, and each Slurm job
runs it; a stage split into tasks (``resources: {array: N}``) runs as ``--task K`` per Slurm array
task and a last ``--finish`` job (the kind's ``split`` function: checks every task, writes the
manifest). ``--inputs`` names the directories of the stages this one reads: when one of them is
*empty* (no rows survived upstream) and the kind does not accept empty input, the stage is recorded
empty without running (see :func:`execute`). Exit codes: 0 done (or recorded empty), 2 bad input
(one ``error:`` line).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from micota.errors import EmptyInputError, UserError, os_error_line
from micota.io import call_locked, read_json
from micota.manifest import empty_reason, write_empty_manifest


def execute(kind_name: str, cfg: Any, inputs: dict[str, Path] | None = None, *, finish: bool = False) -> str | None:
    """Run stage ``kind_name`` with config ``cfg`` here; returns why it is empty, or None when it ran.

    ``inputs`` maps upstream stage names to their directories. An empty input (or an
    :class:`EmptyInputError` raised by the stage) is recorded as an empty manifest on rank 0, so the
    stages downstream are marked empty in turn and the pipeline goes on with its other variants.
    ``finish``: run the kind's ``split`` function (finish an output computed as tasks) instead.
    """
    from micota.pipeline.stages import _import, get_stage_kind

    kind = get_stage_kind(kind_name)
    _, fn = kind.load()
    if finish:
        if kind.split is None:
            raise UserError(f"stage kind {kind_name!r} cannot be split into tasks")
        fn = _import(kind.split, kind_name)
    out_dir = getattr(cfg, kind.out_field())
    empty_dep = next((n for n, d in (inputs or {}).items() if empty_reason(d)), None)
    if empty_dep and not kind.accepts_empty:
        reason = f"input stage {empty_dep} is empty"
    else:
        try:
            call_locked(fn, cfg)  # one writer per output (rank 0 under a launcher)
            return None
        except EmptyInputError as e:
            reason = str(e)
    if _is_rank0():
        write_empty_manifest(out_dir, stage=kind.name, config=cfg, reason=reason)
    return reason


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m micota.pipeline.exec", description="run one pipeline stage")
    ap.add_argument("kind")
    ap.add_argument("config")
    ap.add_argument("--inputs", nargs="*", default=[], metavar="NAME=DIR",
                    help="upstream stage directories (an empty one makes this stage empty)")
    ap.add_argument("--task", type=int, help="run only task K of a stage split into tasks (its config's 'tasks')")
    ap.add_argument("--finish", action="store_true", help="finish a stage split into tasks (all must be complete)")
    args = ap.parse_args(argv)
    from micota.pipeline.stages import get_stage_kind

    try:
        cls, _ = get_stage_kind(args.kind).load()
        raw = read_json(args.config)
        if args.task is not None:
            if "task" not in cls.model_fields:
                raise UserError(f"--task: stage kind {args.kind!r} cannot be split into tasks")
            raw["task"] = args.task
        cfg = cls.build(raw, prefix=args.config)
        inputs = dict(_name_dir(s) for s in args.inputs)
        reason = execute(args.kind, cfg, inputs, finish=args.finish)
        if reason:
            print(f"empty: {reason}", file=sys.stderr)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # read-only or full disk, a file where a directory belongs
        print(f"error: {os_error_line(e)}", file=sys.stderr)
        return 2
    return 0


def _name_dir(s: str) -> tuple[str, Path]:
    name, sep, d = s.partition("=")
    if not sep:
        raise UserError(f"--inputs {s!r}: expected NAME=DIR")
    return name, Path(d)


def _is_rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
