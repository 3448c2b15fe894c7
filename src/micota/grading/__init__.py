"""Math answer grading: modes, a registry, and batch grading with a hard per-item timeout.

Public API::

    is_correct(completion, reference, mode="default") -> bool
    grade(completion, reference, mode="default") -> GradeResult(correct, extracted, reason)
    grade_batch([(completion, reference), ...], mode="default", workers=None, timeout=5.0)
    grade_samples(samples, mode=None) -> samples with extracted/correct/grade_reason/grade_mode

Modes (``GRADERS``, extend with ``@register_grader("name")``): ``default`` (last ``\\boxed{}`` +
math-verify), ``gsm8k`` (boxed or last number, numeric), ``hendrycks`` (MATH ``is_equiv`` string
normalisation) — see :mod:`micota.grading.modes`. Every grade runs in a worker process with a hard
timeout (:mod:`micota.grading.pool`): a pathological answer is graded wrong (``timeout``) in
bounded time, from any thread. A cheap pre-screen (:func:`micota.grading.extract.too_costly`:
exponent towers, huge factorials and literals) grades such answers wrong (``too_complex``) before
they reach a worker.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from typing import TYPE_CHECKING, Sequence

from micota.errors import UserError
from micota.grading.extract import last_boxed, last_number, too_costly
from micota.grading.modes import (
    ERROR_REASONS,
    GRADERS,
    REASONS,
    GradeResult,
    get_grader,
    mode_for_source,
    register_grader,
)
from micota.grading.pool import POOL, shutdown

if TYPE_CHECKING:  # records pull in pydantic; grading workers do not need it
    from micota.records import Sample

__all__ = [
    "ERROR_REASONS", "GRADERS", "REASONS", "GradeResult", "grade", "grade_batch", "grade_samples",
    "is_correct", "last_boxed", "last_number", "mode_for_source", "register_grader", "shutdown",
]

_ITEMS_PER_WORKER = 8  # below this many items per worker, extra processes cost more than they save


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _checked_grader(mode: str):
    fn = get_grader(mode)
    try:
        pickle.dumps(fn)
        if getattr(fn, "__module__", None) == "__main__":
            raise ValueError("defined in __main__")
    except Exception:
        raise UserError(f"grading mode '{mode}': its function cannot be sent to worker processes; "
                        "define it at module level in an importable module") from None
    return fn


def _grade_items(items: Sequence[tuple[str, str, str]], *, workers: int | None, timeout: float,
                 progress: bool | str) -> list[GradeResult]:
    """Grade (completion, reference, mode) triples in worker processes, in input order.

    With ``progress`` (True, or the bar's label) a bar on stderr counts every item: the pre-screened
    ones at once, the others as workers finish them (:func:`micota.progress.progress_bar`)."""
    if timeout <= 0:
        raise UserError(f"grading timeout must be > 0 seconds, got {timeout}")
    if workers is not None and workers < 1:
        raise UserError(f"grading workers must be >= 1, got {workers}")
    graders = {m: _checked_grader(m) for m in {m for _, _, m in items}}
    tasks, results, sent = [], [], []
    for k, (completion, reference, mode) in enumerate(items):
        if not isinstance(completion, str) or not isinstance(reference, str):
            raise UserError(f"grading item {k}: completion and reference must be strings, "
                            f"got {type(completion).__name__} and {type(reference).__name__}")
        if too_costly(completion):  # pre-screen: wrong at once instead of a worker's full timeout
            results.append(GradeResult(False, None, "too_complex"))
            continue
        results.append(None)
        sent.append(k)
        tasks.append((graders[mode], completion, reference))
    if workers is None:
        workers = min(_cpus(), max(1, -(-len(tasks) // _ITEMS_PER_WORKER)))
    with _bar(len(items), progress) as bar:
        if bar is not None and len(items) > len(tasks):
            bar.update(len(items) - len(tasks))
            bar.set_postfix_str(f"{len(items) - len(tasks)} too complex (pre-screen)", refresh=False)
        for k, r in zip(sent, POOL.run(tasks, workers=workers, timeout=timeout, bar=bar)):
            results[k] = r
    return results


def _bar(total: int, progress: bool | str):
    if not progress or not total:
        return contextlib.nullcontext(None)
    from micota.progress import progress_bar

    return progress_bar(total, desc=progress if isinstance(progress, str) else "grading", unit="item")


def grade_batch(pairs: Sequence[tuple[str, str]], mode: str = "default", *, workers: int | None = None,
                timeout: float = 5.0, progress: bool | str = False) -> list[GradeResult]:
    """Grade ``(completion, reference)`` pairs in parallel worker processes, in input order.

    ``workers`` defaults to one per CPU (fewer for small batches: one per 8 items). Each item has a
    hard ``timeout`` in seconds; one that runs over is graded wrong with reason ``timeout``.
    ``progress`` (True, or a label) shows a bar on stderr.
    """
    return _grade_items([(c, r, mode) for c, r in pairs], workers=workers, timeout=timeout, progress=progress)


def grade(completion: str, reference: str, mode: str = "default", *, timeout: float = 5.0) -> GradeResult:
    """Grade one completion: whether it is right, the answer extracted from it, and why."""
    return _grade_items([(completion, reference, mode)], workers=1, timeout=timeout, progress=False)[0]


def is_correct(completion: str, reference: str, mode: str = "default") -> bool:
    """True iff the completion's final answer equals the reference under ``mode``."""
    return grade(completion, reference, mode).correct


def grade_samples(samples: list["Sample"], mode: str | None = None, **kw) -> list["Sample"]:
    """Copies of ``samples`` with ``extracted``/``correct``/``grade_reason``/``grade_mode`` filled.

    The reference is ``sample.reference``; ``mode=None`` picks each sample's benchmark mode from
    ``sample.source`` (:func:`mode_for_source`). A sample cut by the token limit
    (``finish_reason == "length"``) is wrong with reason ``truncated``. ``kw`` goes to
    :func:`grade_batch` (``workers``, ``timeout``, ``progress``).
    """
    workers, timeout, progress = kw.pop("workers", None), kw.pop("timeout", 5.0), kw.pop("progress", False)
    if kw:
        raise TypeError(f"grade_samples() got unexpected keyword arguments: {', '.join(kw)}")
    out = list(samples)
    todo: list[tuple[int, str]] = []
    for i, s in enumerate(samples):
        m = mode or mode_for_source(s.source)
        get_grader(m)
        if s.reference is None:
            raise UserError(f"sample ({s.problem_id}, {s.sample_idx}) has no reference answer to grade against")
        if s.finish_reason == "length":
            out[i] = s.model_copy(update=dict(extracted=None, correct=False, grade_reason="truncated", grade_mode=m))
        else:
            todo.append((i, m))
    results = _grade_items([(samples[i].completion, samples[i].reference, m) for i, m in todo],
                           workers=workers, timeout=timeout, progress=progress)
    for (i, m), r in zip(todo, results):
        out[i] = samples[i].model_copy(update=dict(extracted=r.extracted, correct=r.correct,
                                                   grade_reason=r.reason, grade_mode=m))
    return out
