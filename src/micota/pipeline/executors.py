"""Executors: how the runner gets the stages of a plan computed (``micota run --executor NAME``).

The runner plans, decides what is cached and calls ``executor.run(plan, todo, done)`` with the
instances to compute in topological order; the executor calls ``done(inst)`` as each finishes with a
complete manifest (the runner then records its state) and raises :class:`UserError` (one line
naming the stage and its log) when one fails. Every stage runs through
:func:`micota.pipeline.exec.execute`, in this process or in ``python -m micota.pipeline.exec``.

- ``local`` (default): stages whose kind loads a model (``StageKind.loads_model``) and stages with a
  launcher run one after another, each in its own child process, so GPU memory and parallel state
  are released between stages; light stages (filter, mix, stats, report, world) run in-process.
  The child's output is shown and kept in ``OUT/.pipeline/logs/<instance>.log``.
- ``inprocess``: every stage without a launcher runs in the runner's process (no per-stage start-up
  cost; nothing is released between stages) — the miniature on CPU, see BENCHMARKS.md.
- ``slurm``: one Slurm job per stage instance (:mod:`micota.pipeline.slurm`).

Register another with :func:`register_executor`.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Protocol

from micota.errors import UserError
from micota.io import atomic_write_json
from micota.pipeline.planner import Instance, Plan
from micota.pipeline.schema import LauncherSpec

Done = Callable[[Instance], None]
Echo = Callable[[str], None]
LOG_DIR = ".pipeline/logs"
CONFIG_DIR = ".pipeline/configs"


class Executor(Protocol):
    def run(self, plan: Plan, todo: list[Instance], done: Done, echo: Echo) -> None: ...


EXECUTORS: dict[str, Callable[[], Executor]] = {}


def register_executor(name: str, factory: Callable[[], Executor]) -> None:
    EXECUTORS[name] = factory


def get_executor(name: str) -> Executor:
    if name not in EXECUTORS:
        raise UserError(f"--executor {name!r}: unknown executor (known: {', '.join(sorted(EXECUTORS))})")
    return EXECUTORS[name]()


# ----------------------------------------------------------------------------- shared pieces
def launcher_command(launcher: LauncherSpec, kind: str, config_path: Path) -> list[str]:
    """The argv that runs one stage under ``launcher`` (``python``: one plain child process)."""
    tail = ["-m", "micota.pipeline.exec", kind, str(config_path)]
    if launcher.type == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={launcher.num_processes}",
                f"--nnodes={launcher.num_machines}", *launcher.args, *tail]
    if launcher.type == "accelerate":
        cmd = [sys.executable, "-m", "accelerate.commands.launch"]
        if launcher.config_file:
            cmd += ["--config_file", launcher.config_file]
        cmd += ["--num_processes", str(launcher.num_processes * launcher.num_machines),
                "--num_machines", str(launcher.num_machines), *launcher.args, *tail]
        return cmd
    return [sys.executable, *tail]


def inputs_args(plan: Plan, inst: Instance) -> list[str]:
    """``--inputs NAME=DIR ...`` for :mod:`micota.pipeline.exec` (empty when the stage reads no stage)."""
    return ["--inputs", *(f"{d}={plan.get(d).dir}" for d in inst.deps)] if inst.deps else []


def write_config(plan: Plan, inst: Instance) -> Path:
    assert inst.config is not None
    path = plan.out / CONFIG_DIR / f"{inst.name}.json"
    atomic_write_json(path, inst.config.model_dump(mode="json"))
    return path


def stage_command(plan: Plan, inst: Instance) -> list[str]:
    """Write the stage's config; the argv that runs it in a child (under its launcher, if any)."""
    cfg = write_config(plan, inst)
    return launcher_command(inst.launcher or LauncherSpec(), inst.stage.kind, cfg) + inputs_args(plan, inst)


def _in_process(plan: Plan, inst: Instance, echo: Echo) -> None:
    from micota.pipeline.exec import execute

    reason = execute(inst.stage.kind, inst.config, {d: plan.get(d).dir for d in inst.deps})
    if reason:
        echo(f"{inst.name} is empty: {reason}")
    gc.collect()


def _in_child(plan: Plan, inst: Instance, echo: Echo) -> None:
    """Run the stage in a child process; its output goes to our stderr and to the stage's log file."""
    cmd = stage_command(plan, inst)
    log = plan.out / LOG_DIR / f"{inst.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    last = b""
    with open(log, "ab") as lf:
        lf.write(f"$ {' '.join(cmd)}\n".encode())
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        assert proc.stdout is not None
        try:
            while chunk := os.read(proc.stdout.fileno(), 1 << 16):
                lf.write(chunk)
                lf.flush()
                sys.stderr.write(chunk.decode(errors="replace"))
                sys.stderr.flush()
                last = (last + chunk)[-4096:]
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if rc != 0:
        lines = [ln.strip() for ln in last.decode(errors="replace").replace("\r", "\n").splitlines() if ln.strip()]
        why = next((ln[len("error:"):].strip() for ln in reversed(lines) if ln.startswith("error:")), lines[-1] if lines else "")
        raise UserError(f"stage {inst.name} ({inst.stage.kind}) failed with exit code {rc}"
                        f"{': ' + why[:300] if why else ''}; log: {log}")


def _die_with_parent() -> None:
    """In the child (Linux): get SIGKILL when the runner dies, so a killed ``micota run`` never leaves
    a stage writing behind the rerun's back."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class _Sequential:
    """Run the stages one after another here; ``isolate(inst)`` says which go to a child process."""

    def __init__(self, isolate: Callable[[Instance], bool]):
        self.isolate = isolate

    def run(self, plan: Plan, todo: list[Instance], done: Done, echo: Echo) -> None:
        for n, inst in enumerate(todo, 1):
            echo(f"[{n}/{len(todo)}] {inst.name} ({inst.stage.kind}): {inst.reason}")
            (_in_child if self.isolate(inst) else _in_process)(plan, inst, lambda s: echo(f"[{n}/{len(todo)}] {s}"))
            done(inst)


def _has_launcher(inst: Instance) -> bool:
    return inst.launcher is not None and inst.launcher.type != "python"


register_executor("local", lambda: _Sequential(lambda i: _has_launcher(i) or bool(i.kind and i.kind.loads_model)))
register_executor("inprocess", lambda: _Sequential(_has_launcher))


def _slurm() -> Executor:
    from micota.pipeline.slurm import SlurmExecutor

    return SlurmExecutor()


register_executor("slurm", _slurm)
