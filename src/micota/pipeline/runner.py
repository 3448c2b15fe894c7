"""Run a planned pipeline: skip cached stages, resume incomplete ones, run the rest in order.

Each stage instance calls its kind's library function with its resolved config (in this process),
or, for a launchable kind with a ``launcher`` (accelerate / torchrun), spawns
``<launcher> -m micota.pipeline.exec KIND CONFIG.json``. A stage must leave a complete manifest;
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

import gc
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from micota.errors import EmptyInputError, UserError
from micota.io import atomic_write_bytes, atomic_write_json, call_locked, check_under, output_lock, to_jsonable
from micota.manifest import empty_reason, is_complete, write_empty_manifest
from micota.pipeline.planner import STATE_DIR, Instance, Plan, _state_path, make_plan, state_record
from micota.pipeline.schema import LauncherSpec, check_launcher_args, load_pipeline
from micota.pipeline.stages import plugins_allowed

REPORT_FILES = ("REPORT.md", "results.json")


def _downstream(plan: Plan, roots: list[Instance]) -> set[str]:
    names = {i.name for i in roots}
    for inst in plan.instances:  # topological order: one pass suffices
        if any(d in names for d in inst.deps):
            names.add(inst.name)
    return names


def launcher_command(launcher: LauncherSpec, kind: str, config_path: Path) -> list[str]:
    """The argv that runs one stage under ``launcher``."""
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


def _run_instance(plan: Plan, inst: Instance) -> None:
    assert inst.kind is not None and inst.config is not None
    # e.g. train: continue from checkpoints a killed run left beside its output (none: starts fresh)
    if "resume" in type(inst.config).model_fields:
        inst.config = inst.config.model_copy(update={"resume": True})
    if inst.launcher is None or inst.launcher.type == "python":
        _, fn = inst.kind.load()
        call_locked(fn, inst.config)
        gc.collect()
        return
    cfg_path = plan.out / ".pipeline" / "configs" / f"{inst.name}.json"
    atomic_write_json(cfg_path, inst.config.model_dump(mode="json"))
    cmd = launcher_command(inst.launcher, inst.stage.kind, cfg_path)
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise UserError(f"stage {inst.name}: launcher exited with code {proc.returncode} ({' '.join(cmd[:4])} …)")


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
    allow_plugins: bool = False,
    allow_launcher_args: bool = False,
    echo: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> Plan:
    """Plan ``pipeline`` and run what is not cached. Returns the plan (statuses as planned)."""
    if from_stage and only:
        raise UserError("--from and --only cannot be combined")
    if allow_plugins and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # opted in: module:function kinds may live beside the recipe
    with plugins_allowed(allow_plugins):
        plan = make_plan(load_pipeline(pipeline), out)
        if dry_run:
            return _run_plan(plan, dry_run, from_stage, only, allow_launcher_args, echo)
        with output_lock(plan.out):
            return _run_plan(plan, dry_run, from_stage, only, allow_launcher_args, echo)


def _run_plan(plan: Plan, dry_run: bool, from_stage: str | None, only: str | None,
              allow_launcher_args: bool, echo: Callable[[str], None]) -> Plan:
    for inst in plan.instances:
        check_under(inst.dir, plan.out, what=f"stage {inst.name}: directory")
        if inst.launcher is not None and not allow_launcher_args:
            where = f"stages.{inst.stage.name}.launcher" if inst.stage.launcher else "launcher"
            check_launcher_args(inst.launcher, where)
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
    todo = [i for i in plan.instances if i.name in selected and (i.status != "cached" or i.name in forced)]
    for n, inst in enumerate(todo, 1):
        if inst.name in forced and inst.dir.exists():
            shutil.rmtree(inst.dir)
        echo(f"[{n}/{len(todo)}] {inst.name} ({inst.stage.kind}): {inst.reason}")
        t0 = time.time()
        empty_dep = next((d for d in inst.deps if empty_reason(plan.get(d).dir)), None)
        if empty_dep and not inst.kind.accepts_empty:
            write_empty_manifest(inst.dir, stage=inst.stage.kind, config=inst.config, reason=f"input stage {empty_dep} is empty")
            echo(f"[{n}/{len(todo)}] {inst.name} skipped: input stage {empty_dep} is empty")
        else:
            try:
                _run_instance(plan, inst)
            except EmptyInputError as e:  # one data variant came out empty: record it, go on with the rest
                write_empty_manifest(inst.dir, stage=inst.stage.kind, config=inst.config, reason=str(e))
                echo(f"[{n}/{len(todo)}] {inst.name} is empty: {e}")
        if not is_complete(inst.dir):
            raise UserError(f"stage {inst.name} ({inst.stage.kind}) finished without a complete manifest in {inst.dir}")
        atomic_write_json(_state_path(plan.out, inst.name), to_jsonable(state_record(inst)))
        echo(f"[{n}/{len(todo)}] {inst.name} done in {time.time() - t0:.1f}s")
    for p in _publish_reports(plan):
        echo(f"wrote {p}")
    return plan


__all__ = ["run_pipeline", "launcher_command", "STATE_DIR"]
