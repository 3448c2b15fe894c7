"""Run a planned pipeline: skip cached stages, resume incomplete ones, hand the rest to an executor.

The executor (:mod:`micota.pipeline.executors`: ``local`` by default, ``inprocess``, ``slurm``)
runs each stage instance through ``micota.pipeline.exec`` — in this process, in a child process
(stages that load a model; ``<launcher> -m micota.pipeline.exec KIND CONFIG.json`` under
accelerate / torchrun), or as a Slurm job. A stage must leave a complete manifest;
the runner then records its state (``OUT/.pipeline/state/<instance>.json``) so the next plan can
say why something re-runs. ``OUT/plan.json`` maps every instance to its directory. Outputs of
``report`` stages (REPORT.md, results.json, PNGs) are copied to ``OUT``.

Safety: ``micota run`` holds the lock of ``OUT`` (:func:`micota.io.output_lock`) and each stage
the lock of its own directory, so a second run on the same output fails at once naming the first;
every stage directory must lie under ``OUT``; launcher arguments outside the launcher's own options
need ``allow_launcher_args`` and ``module:function`` stage kinds need ``allow_plugins``.

``--only STAGE`` runs just that stage (its inputs must be complete); ``--from STAGE`` recomputes
STAGE and everything downstream of it even if cached (other stages run only if missing).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

from micota.errors import UserError
from micota.io import atomic_write_bytes, atomic_write_json, check_under, output_lock, to_jsonable
from micota.manifest import is_complete
from micota.pipeline.executors import get_executor, launcher_command
from micota.pipeline.planner import STATE_DIR, Instance, Plan, _state_path, make_plan, state_record
from micota.pipeline.schema import check_launcher_args, load_pipeline
from micota.pipeline.stages import plugins_allowed

REPORT_FILES = ("REPORT.md", "results.json")


def _downstream(plan: Plan, roots: list[Instance]) -> set[str]:
    names = {i.name for i in roots}
    for inst in plan.instances:  # topological order: one pass suffices
        if any(d in names for d in inst.deps):
            names.add(inst.name)
    return names


def _write_plan(plan: Plan) -> None:
    atomic_write_json(plan.out / "plan.json", {
        "pipeline": plan.spec.name, "source": plan.spec.source,
        "stages": {i.name: {"kind": i.stage.kind, "key": i.key, "dir": i.dir.name, "deps": i.deps} for i in plan.instances},
    })


def _publish_reports(plan: Plan) -> list[Path]:
    published = []
    for inst in plan.instances:
        if inst.stage.kind != "report" or not is_complete(inst.dir):
            continue
        for f in sorted(inst.dir.iterdir()):
            if f.name in REPORT_FILES or f.suffix == ".png":
                atomic_write_bytes(plan.out / f.name, f.read_bytes())
                published.append(plan.out / f.name)
    return published


def run_pipeline(
    pipeline: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    dry_run: bool = False,
    from_stage: str | None = None,
    only: str | None = None,
    executor: str = "local",
    allow_plugins: bool = False,
    allow_launcher_args: bool = False,
    echo: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
    vars: dict[str, Any] | None = None,
) -> Plan:
    """Plan ``pipeline`` (its ``vars`` overridden by ``vars``) and run what is not cached. Returns the plan."""
    if from_stage and only:
        raise UserError("--from and --only cannot be combined")
    get_executor(executor)  # an unknown name fails before anything is planned
    if allow_plugins and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # opted in: module:function kinds may live beside the recipe
    with plugins_allowed(allow_plugins):
        plan = make_plan(load_pipeline(pipeline, vars=vars), out)
        for inst in plan.instances:
            check_under(inst.dir, plan.out, what=f"stage {inst.name}: directory")
            if inst.launcher is not None and not allow_launcher_args:
                check_launcher_args(inst.launcher, f"stages.{inst.stage.name}.launcher" if inst.stage.launcher else "launcher")
        if dry_run:
            return _run_plan(plan, dry_run, from_stage, only, executor, echo)
        with output_lock(plan.out):
            return _run_plan(plan, dry_run, from_stage, only, executor, echo)


def _run_plan(plan: Plan, dry_run: bool, from_stage: str | None, only: str | None, executor: str,
              echo: Callable[[str], None]) -> Plan:
    forced: set[str] = set()
    selected = {i.name for i in plan.instances}
    if from_stage:
        forced = _downstream(plan, plan.select(from_stage))
        for i in plan.instances:
            if i.name in forced:
                i.status, i.reason = "run", f"forced by --from {from_stage}"
    if only:
        selected = {i.name for i in plan.select(only)}
        for i in plan.instances:
            if i.name not in selected:
                i.status, i.reason = "skip", "not selected (--only)"
        for i in plan.instances:
            if i.name in selected:
                missing = [d for d in i.deps if not is_complete(plan.get(d).dir)]
                if missing:
                    raise UserError(f"--only {only}: input stage {missing[0]} has not finished (run it first)")
    echo(f"pipeline {plan.spec.name}: {len(plan.instances)} stages -> {plan.out}")
    echo(plan.table())
    if dry_run:
        return plan
    plan.out.mkdir(parents=True, exist_ok=True)
    _write_plan(plan)
    if plan.spec.threads:  # the same seed gives the same numbers only at the same thread count
        import torch

        os.environ["OMP_NUM_THREADS"] = str(plan.spec.threads)
        torch.set_num_threads(plan.spec.threads)
        echo(f"torch intra-op threads: {plan.spec.threads} (pipeline 'threads:')")
    todo = [i for i in plan.instances if i.name in selected and (i.status != "cached" or i.name in forced)]
    for inst in todo:
        if inst.name in forced and inst.dir.exists():
            shutil.rmtree(inst.dir)
        # e.g. train: continue from checkpoints a killed run left beside its output (none: starts fresh)
        if inst.config is not None and "resume" in type(inst.config).model_fields:
            inst.config = inst.config.model_copy(update={"resume": True})
    t0 = time.time()

    def done(inst: Instance) -> None:
        if not is_complete(inst.dir):
            raise UserError(f"stage {inst.name} ({inst.stage.kind}) finished without a complete manifest in {inst.dir}")
        atomic_write_json(_state_path(plan.out, inst.name), to_jsonable(state_record(inst)))
        echo(f"{inst.name} done ({time.time() - t0:.1f}s since start)")

    if todo:
        get_executor(executor).run(plan, todo, done, echo)
    for p in _publish_reports(plan):
        echo(f"wrote {p}")
    return plan


def pipeline_status(pipeline: str | os.PathLike, *, out: str | os.PathLike | None = None,
                    vars: dict[str, Any] | None = None) -> str:
    """``micota run --status``: each stage's output status and its latest Slurm job (id, state, elapsed, log)."""
    from micota.pipeline.slurm import format_status, read_records, status_rows

    plan = make_plan(load_pipeline(pipeline, vars=vars), out)
    if not read_records(plan.out):  # never submitted to Slurm: the plan says it all
        return plan.table()
    return format_status(status_rows(plan))


def cancel_pipeline(pipeline: str | os.PathLike, *, out: str | os.PathLike | None = None,
                    vars: dict[str, Any] | None = None) -> str:
    """``micota run --cancel``: cancel the pipeline's queued and running Slurm jobs."""
    from micota.pipeline.slurm import cancel_jobs

    plan = make_plan(load_pipeline(pipeline, vars=vars), out)
    ids = cancel_jobs(plan)
    return f"cancelled {len(ids)} job(s){': ' + ' '.join(ids) if ids else ''}"


__all__ = ["run_pipeline", "pipeline_status", "cancel_pipeline", "launcher_command", "STATE_DIR"]
