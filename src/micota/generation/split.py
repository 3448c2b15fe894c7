"""A generate output split into N tasks of disjoint problems (``--tasks N``; Slurm array tasks).

Partition: problem ``i`` (its index in the problem list, the order of the problems file or
benchmark) belongs to task ``i mod N`` — disjoint, covering, balanced to within one problem, and
stable: the same problem list always gives the same problems to the same task (``--limit`` keeps
each index, hence its task). Layout::

    OUT/tasks/task-K-of-N/samples-NNNNN.jsonl   task K's samples (an ordinary generate output:
    OUT/tasks/task-K-of-N/manifest.json          own shards, own lock, own manifest; resumes alone)
    OUT/manifest.json                            written last, by finish_split

A task skips every key already written anywhere in ``OUT`` (so a task resumes from its own shards,
and a split with another N, or an unsplit run, never writes a key twice). :func:`finish_split`
checks that every task of the split is complete and that the union of the shards has every
``(problem_id, sample_idx)`` of the problem set, then writes ``OUT/manifest.json``. Readers
(:func:`micota.generation.runner.load_samples`) read that union.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence, TypeVar

from micota.data.benchmarks import load_problems
from micota.errors import UserError
from micota.generation.backends import GenerationBackend, close_backend
from micota.generation.runner import (BackendArg, GenerateConfig, Sample, _check_existing, build_backend, generate_part,
                                      write_generate_manifest)
from micota.io import output_lock
from micota.manifest import is_complete, read_manifest

TASKS_DIR = "tasks"
T = TypeVar("T")


def partition(items: Sequence[T], tasks: int) -> list[list[T]]:
    """``tasks`` disjoint lists covering ``items``: item ``i`` goes to list ``i mod tasks``."""
    if tasks < 1:
        raise ValueError("tasks must be >= 1")
    return [list(items[k::tasks]) for k in range(tasks)]


def task_dir(out: str | Path, task: int, tasks: int) -> Path:
    return Path(out) / TASKS_DIR / f"task-{task:03d}-of-{tasks:03d}"


def tasks_complete(out: str | Path, tasks: int) -> list[bool]:
    """Whether each task of an ``tasks``-way split of ``out`` has its complete manifest."""
    return [is_complete(task_dir(out, k, tasks)) for k in range(tasks)]


def generate_split(cfg: GenerateConfig, *, backend: BackendArg = None) -> Path:
    """Run task ``cfg.task`` of ``cfg.tasks`` (returns its directory), or, without ``task``, every
    unfinished task here (one backend for all) and then :func:`finish_split` (returns ``cfg.out``)."""
    n, out = cfg.tasks, Path(cfg.out)
    if cfg.task is not None and cfg.task >= n:
        raise UserError(f"--task {cfg.task}: not a task of --tasks {n} (0..{n - 1})")
    problems = load_problems(cfg.problems, data_dir=cfg.data_dir, limit=cfg.limit)
    if len(problems) < n:
        raise UserError(f"--tasks {n}: more tasks than problems ({len(problems)}); use at most {len(problems)}")
    parts = partition(problems, n)
    todo = [cfg.task] if cfg.task is not None else [k for k, ok in enumerate(tasks_complete(out, n)) if not ok]
    built: list[GenerationBackend] = []

    def shared() -> GenerationBackend:  # built on the first task with work to do, then reused
        if isinstance(backend, GenerationBackend):
            return backend
        if not built:
            built.append(backend() if backend is not None else build_backend(cfg, cfg.model))
        return built[0]

    try:
        for k in todo:
            with output_lock(task_dir(out, k, n)):  # one writer per task (re-entrant under call_locked)
                generate_part(cfg, task_dir(out, k, n), parts[k], backend=shared, stage=out,
                              extra={"task": k, "tasks": n})
    finally:
        if backend is None:
            for be in built:
                close_backend(be)
    return task_dir(out, cfg.task, n) if cfg.task is not None else finish_split(cfg)


def finish_split(cfg: GenerateConfig) -> Path:
    """Write ``OUT/manifest.json`` of a split output once every task is complete and the union of the
    shards holds every key of the problem set; a :class:`UserError` naming the first unfinished task
    otherwise (nothing is generated here)."""
    t0 = time.time()
    n, out = cfg.tasks, Path(cfg.out)
    missing = [k for k, ok in enumerate(tasks_complete(out, n)) if not ok]
    if missing:
        raise UserError(f"{out}: task {missing[0]} of {n} has not finished ({len(missing)} unfinished; no complete "
                        f"manifest in {task_dir(out, missing[0], n)}): run it (--task {missing[0]}) first")
    chash = cfg.sample_config_hash()
    mans = [read_manifest(task_dir(out, k, n)) or {} for k in range(n)]
    bad = next((k for k, m in enumerate(mans) if m.get("sample_config_hash") != chash), None)
    if bad is not None:
        raise UserError(f"{task_dir(out, bad, n)}: written with another model/sampling/prompt config; "
                        "pass --overwrite to replace the output or choose another --out")
    samples: list[Sample] = _check_existing(out, chash, cfg)
    dropped = sorted({pid for m in mans for pid in m.get("dropped_long_prompt_ids", [])})
    problems = [p for p in load_problems(cfg.problems, data_dir=cfg.data_dir, limit=cfg.limit) if p.id not in dropped]
    lost = {(p.id, i) for p in problems for i in range(cfg.n)} - {s.key for s in samples}
    if lost:
        raise UserError(f"{out}: {len(lost)} samples missing from the tasks' shards (e.g. {sorted(lost)[0]})")
    return write_generate_manifest(
        cfg, out, t0=t0, problems=len(problems), samples=samples, dropped=dropped,
        written=sum(m.get("counts", {}).get("generated_this_run", 0) for m in mans),
        template_hash=mans[0].get("template_hash"), extra={"tasks": n}).parent
