"""Samples -> SFT dataset: keep correct, complete, not-too-long completions.

:func:`filter_samples` reads Sample rows (a generate/eval output directory or one JSONL file),
grades those without a grade (through :mod:`micota.grading`; ``regrade`` re-grades all), and keeps
a sample when, checked in this order (the first failing check is its drop reason):

- ``empty``: the completion is blank;
- ``truncated``: it did not finish on EOS (``finish_reason != "stop"``) and ``require_eos``;
- ``too_long``: ``completion_tokens >= max_tokens`` (paper: < 16,000);
- ``ungradable``: no grade and no reference answer to grade against;
- ``incorrect``: graded wrong;
- ``duplicate``: same problem and identical completion text as a kept sample;
- ``not_selected``: per-problem selection (``first``: lowest sample_idx, ``shortest``: fewest
  completion tokens, ``all``: keep every one).

Output: ``data.jsonl`` of :class:`~micota.records.SftExample` (prompt = the user message built by
:func:`micota.generation.prompts.build_messages` from the raw problem text, completion = one
assistant message; the chat template is applied at train time), ``filter_report.json`` (counts by
reason, length statistics), ``manifest.json`` last.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from micota.config import StageConfig
from micota.errors import EmptyInputError, UserError
from micota.generation.prompts import DEFAULT_INSTRUCTION, build_messages
from micota.io import atomic_dir, atomic_write_json
from micota.manifest import is_complete, write_manifest
from micota.generation.runner import SHARD_GLOB, load_samples, shard_files
from micota.records import Message, Sample, SftExample, read_jsonl_dir, write_jsonl_atomic


class FilterConfig(StageConfig):
    samples: str = Field(..., description="Samples: a generate/eval output directory (samples-*.jsonl) or a JSONL file")
    out: str = Field(..., description="Output dataset directory (data.jsonl, filter_report.json, manifest.json)")
    max_tokens: int = Field(16000, ge=1, description="Keep completions with fewer tokens than this")
    per_problem: Literal["first", "shortest", "all"] = Field("first", description="Which correct samples to keep per problem")
    require_eos: bool = Field(True, description="Drop completions that did not finish on EOS")
    mode: str | None = Field(None, description="Grading mode (default: each sample's grade_mode, else the mode of its source)")
    regrade: bool = Field(False, description="Re-grade samples that already carry a grade")
    dedupe: bool = Field(True, description="Drop identical completions of the same problem")
    instruction: str = Field(DEFAULT_INSTRUCTION, description="Instruction appended to each problem in the SFT prompt")


def read_samples(path: str | Path) -> list[Sample]:
    """Sample rows of a directory's ``samples-*.jsonl`` shards (its tasks' included: a split generate
    output), or of its ``*.jsonl``, or of one file."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such samples directory or file")
    if p.is_dir() and shard_files(p):
        return load_samples(p)
    pattern = SHARD_GLOB if p.is_file() or any(p.glob(SHARD_GLOB)) else "*.jsonl"
    if p.is_dir() and not any(p.glob(pattern)):
        raise UserError(f"{p}: no samples-*.jsonl files")
    return read_jsonl_dir(p, Sample, pattern=pattern)


def _grade(samples: list[Sample], mode: str | None, regrade: bool) -> list[Sample]:
    """Grade samples that need it, grouped by mode; returns the list with grades filled in."""
    todo: dict[str | None, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        if (s.correct is None or regrade) and s.reference is not None:
            todo[mode or s.grade_mode].append(i)
    if not todo:
        return samples
    from micota.grading import grade_samples

    out = list(samples)
    for m, idx in todo.items():
        batch = [samples[i] for i in idx]
        for i, g in zip(idx, grade_samples(batch, m)):
            out[i] = g
    return out


def _length_stats(xs: list[int]) -> dict[str, float]:
    if not xs:
        return {"n": 0}
    a = np.asarray(xs, dtype=float)
    return {"n": len(xs), "mean": round(float(a.mean()), 2), "median": float(np.median(a)),
            "p90": float(np.percentile(a, 90)), "max": int(a.max())}


def filter_samples(cfg: FilterConfig) -> Path:
    """Build the SFT dataset; return its directory. See the module docstring for the rules."""
    t0 = time.time()
    out = Path(cfg.out)
    if out.exists():
        raise UserError(f"{out}: output already exists (remove it or choose another path)")
    samples = read_samples(cfg.samples)
    if not samples:
        raise UserError(f"{cfg.samples}: no samples")
    for s in samples:
        if not s.problem:
            raise UserError(f"{cfg.samples}: sample {s.problem_id}#{s.sample_idx} has no 'problem' text (regenerate with micota generate)")
    samples = _grade(sorted(samples, key=lambda s: s.key), cfg.mode, cfg.regrade)

    reasons: Counter[str] = Counter()
    candidates: dict[str, list[Sample]] = defaultdict(list)
    seen: set[tuple[str, str]] = set()
    for s in samples:
        if not s.completion.strip():
            reason = "empty"
        elif cfg.require_eos and s.finish_reason != "stop":
            reason = "truncated"
        elif s.completion_tokens >= cfg.max_tokens:
            reason = "too_long"
        elif s.correct is None:
            reason = "ungradable"
        elif not s.correct:
            reason = "incorrect"
        elif cfg.dedupe and (s.problem_id, s.completion) in seen:
            reason = "duplicate"
        else:
            seen.add((s.problem_id, s.completion))
            candidates[s.problem_id].append(s)
            continue
        reasons[reason] += 1

    kept: list[Sample] = []
    for pid, cands in candidates.items():
        if cfg.per_problem == "first":
            chosen = [min(cands, key=lambda s: s.sample_idx)]
        elif cfg.per_problem == "shortest":
            chosen = [min(cands, key=lambda s: (s.completion_tokens, s.sample_idx))]
        else:
            chosen = cands
        if len(cands) > len(chosen):
            reasons["not_selected"] += len(cands) - len(chosen)
        kept.extend(chosen)
    if not kept:
        raise EmptyInputError(f"{cfg.samples}: no sample survived filtering ({', '.join(f'{k}: {v}' for k, v in sorted(reasons.items()))})")

    examples = [
        SftExample(
            id=f"{s.problem_id}#{s.sample_idx}",
            problem_id=s.problem_id,
            prompt=[Message(**m) for m in build_messages(s.problem, instruction=cfg.instruction)],
            completion=[Message(role="assistant", content=s.completion)],
            meta={"model": s.model, "completion_tokens": s.completion_tokens, "source": s.source,
                  "sample_idx": s.sample_idx, "template_hash": s.template_hash},
        )
        for s in kept
    ]
    src = Path(cfg.samples)
    report = {
        "samples": len(samples),
        "samples_run_complete": is_complete(src) if src.is_dir() else None,  # False: generation was still running/killed
        "problems": len({s.problem_id for s in samples}),
        "kept": len(examples),
        "problems_kept": len(candidates),
        "dropped": dict(sorted(reasons.items())),
        "completion_tokens_all": _length_stats([s.completion_tokens for s in samples]),
        "completion_tokens_kept": _length_stats([s.completion_tokens for s in kept]),
        "completion_chars_kept": _length_stats([len(s.completion) for s in kept]),
    }
    with atomic_dir(out) as tmp:
        write_jsonl_atomic(tmp / "data.jsonl", examples)
        atomic_write_json(tmp / "filter_report.json", report)
        write_manifest(tmp, stage="filter", config=cfg, inputs={"samples": cfg.samples},
                       counts={"samples": len(samples), "kept": len(examples)}, started_at=t0)
    return out
