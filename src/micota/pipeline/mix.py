"""``mix`` stage: Mix distillation (Li et al. 2025, "Small Models Struggle to Learn from Strong
Reasoners") — an SFT dataset drawn from several datasets in given proportions (their Mix-Long:
long : short = 1 : 4).

With weights wᵢ (normalised to pᵢ = wᵢ/Σw) and sizes Nᵢ, the mix has ``total`` examples (default
the largest total drawable without replacement, min_i Nᵢ/pᵢ), of which round(total·pᵢ) are drawn
from dataset i without replacement under ``seed``; rows keep their record, ``meta.mix_source``
names the dataset, and the result is shuffled.

``problems_from``: before drawing, keep only rows whose ``problem_id`` occurs in every one of these
datasets — e.g. the teacher's long CoT restricted to the problems of the Mid-CoT dataset, so that two
variants compared per problem are trained on the same problems (weight 1, one dataset: a restriction).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from pydantic import Field

from micota.config import StageConfig
from micota.errors import EmptyInputError, UserError
from micota.io import atomic_dir
from micota.manifest import write_manifest
from micota.records import SftExample, read_jsonl, write_jsonl_atomic


class MixConfig(StageConfig):
    datasets: dict[str, str] = Field(description="Name -> SFT dataset (a filter output directory or a data.jsonl file).")
    weights: dict[str, float] = Field(default_factory=dict, description="Name -> proportion (default: equal).")
    total: int | None = Field(None, ge=1, description="Examples in the mix (default: the most drawable without replacement).")
    seed: int = Field(0, description="Sampling seed.")
    problems_from: list[str] = Field(default_factory=list, description="Keep only problems present in every one of these SFT datasets.")
    out: Path = Field(description="Output directory (data.jsonl, manifest.json).")


def _data_file(p: str) -> Path:
    path = Path(p)
    return path / "data.jsonl" if path.is_dir() else path


def mix_datasets(cfg: MixConfig) -> Path:
    t0 = time.time()
    if not cfg.datasets:
        raise UserError("mix: datasets is empty")
    extra = set(cfg.weights) - set(cfg.datasets)
    if extra:
        raise UserError(f"mix: weight given for unknown dataset {sorted(extra)[0]!r}")
    w = {k: cfg.weights.get(k, 1.0) for k in cfg.datasets}
    if any(v < 0 for v in w.values()) or sum(w.values()) <= 0:
        raise UserError("mix: weights must be >= 0 with a positive sum")
    rows = {k: read_jsonl(_data_file(p), SftExample) for k, p in cfg.datasets.items()}
    for other in cfg.problems_from:
        keep = {r.problem_id for r in read_jsonl(_data_file(other), SftExample)}
        rows = {k: [r for r in v if r.problem_id in keep] for k, v in rows.items()}
    p = {k: v / sum(w.values()) for k, v in w.items()}
    cap = min(len(rows[k]) / p[k] for k in rows if p[k] > 0)
    total = cfg.total or int(cap)
    rng = random.Random(cfg.seed)
    mixed: list[SftExample] = []
    counts = {}
    for k in sorted(rows):
        n = round(total * p[k])
        if n > len(rows[k]):
            raise UserError(f"mix: {k!r} has {len(rows[k])} examples, {n} needed for total {total}")
        pick = rng.sample(rows[k], n)
        counts[k] = n
        mixed += [r.model_copy(update={"id": f"{k}:{r.id}", "meta": {**r.meta, "mix_source": k}}) for r in pick]
    if not mixed:
        raise EmptyInputError("mix: the mix is empty (no rows left to draw from)")
    rng.shuffle(mixed)
    with atomic_dir(cfg.out) as tmp:
        write_jsonl_atomic(tmp / "data.jsonl", mixed)
        write_manifest(tmp, stage="mix", config=cfg, inputs={**{k: _data_file(v) for k, v in cfg.datasets.items()},
                                                            **{f"problems_from:{i}": _data_file(v) for i, v in enumerate(cfg.problems_from)}},
                       counts={"examples": len(mixed), **{f"from_{k}": n for k, n in counts.items()}}, started_at=t0)
    return Path(cfg.out)
