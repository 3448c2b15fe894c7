"""``micota merge-search``: pick the merge weight whose traces hit a target length ratio.

At each point (weight w, density d) the fine-tuned model is merged onto its base
(``MergeConfig.two_model``), the merged model generates greedily on the probe problems (the
generation runner, so any backend), and the samples are graded. For each point:

    length_ratio = mean completion tokens(merged) / mean completion tokens(fine-tuned)
    accuracy     = mean correct(merged);   retained = accuracy / accuracy(fine-tuned)

``search: bisection`` assumes the ratio grows with w (w=0 is the base, w=1 the fine-tune) and halves
[0, 1] ``steps`` times towards ``target_length_ratio``; ``search: grid`` tries ``weights``. Every
density in ``densities`` is searched. The chosen point is the one closest to the target among
those with ``retained >= 1 - accuracy_tolerance`` (if none qualifies: the most accurate point,
flagged ``within_tolerance: false``). Output: the chosen merged model (re-merged with the same
seed, so identical to the probed one), ``curve.csv``, ``curve.png``, ``merge_search.json``,
``manifest.json``. Work (one directory per point, samples kept, merged weights deleted after
probing) lives in a hidden sibling ``.<out>.work`` so an interrupted search resumes.
"""

from __future__ import annotations

import csv
import io
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from micota.config import StageConfig
from micota.errors import UserError
from micota.io import atomic_dir, atomic_write_json, atomic_write_text
from micota.manifest import is_complete, write_manifest


class MergeSearchConfig(StageConfig):
    base: str = Field(description="The TA's base model (task vector = fine-tuned − base).")
    finetuned: str = Field(description="The TA fine-tuned on long CoT.")
    probe: str = Field(description="Probe problems: a JSONL file or benchmark name.")
    out: Path = Field(description="Output directory (chosen merged model + curve.csv, curve.png).")
    target_length_ratio: float = Field(0.5, gt=0, description="Target mean completion tokens relative to the fine-tuned model.")
    accuracy_tolerance: float = Field(0.1, ge=0, le=1, description="Keep points with accuracy >= (1 - tol) × the fine-tuned model's.")
    method: str = Field("dare_ties", description="Merge method.")
    search: Literal["bisection", "grid"] = Field("bisection", description="Weight search strategy.")
    steps: int = Field(4, ge=1, description="Bisection steps.")
    weights: list[float] = Field(default_factory=lambda: [0.3, 0.5, 0.7, 0.9], description="Grid weights (search: grid).")
    densities: list[float] = Field(default_factory=lambda: [0.5], description="Densities to try (DARE keep fraction).")
    seed: int = Field(0, description="Merge seed.")
    limit: int | None = Field(None, ge=1, description="Use only the first N probe problems.")
    max_new_tokens: int = Field(1024, ge=1, description="Generation limit on the probe.")
    batch_size: int = Field(8, ge=1, description="Generation batch size.")
    backend: str = Field("hf", description="Generation backend (hf, vllm).")
    data_dir: Path | None = Field(None, description="Benchmark data directory (when probe is a benchmark name).")
    dtype: str = Field("auto", description="Generation dtype.")
    device: str = Field("auto", description="Generation device.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per model (vllm).")


def _probe(cfg: MergeSearchConfig, model: str, out: Path) -> dict[str, float]:
    from micota.generation.runner import GenerateConfig, generate
    from micota.report.build import load_graded

    gcfg = GenerateConfig(model=model, problems=cfg.probe, out=out, max_new_tokens=cfg.max_new_tokens, limit=cfg.limit,
                          batch_size=cfg.batch_size, backend=cfg.backend, data_dir=cfg.data_dir, dtype=cfg.dtype,
                          device=cfg.device, tensor_parallel_size=cfg.tensor_parallel_size, seed=cfg.seed)
    if not is_complete(out):
        generate(gcfg)
    samples, _ = load_graded(out)
    n = len(samples)
    return {"accuracy": sum(bool(s.correct) for s in samples) / n, "mean_tokens": sum(s.completion_tokens for s in samples) / n,
            "truncated": sum(s.finish_reason == "length" for s in samples) / n}


def _merge(cfg: MergeSearchConfig, w: float, d: float, out: Path) -> Path:
    from micota.merging import MergeConfig, merge

    return merge(MergeConfig.two_model(cfg.base, cfg.finetuned, method=cfg.method, weight=w, density=d, seed=cfg.seed,
                                       out=out, overwrite=True))


def _point(cfg: MergeSearchConfig, work: Path, w: float, d: float, ref: dict[str, float]) -> dict[str, Any]:
    pdir = work / f"w{w:.4f}-d{d:.4f}"
    samples = pdir / "samples"
    if not is_complete(samples):
        model = _merge(cfg, w, d, pdir / "model")
        _probe(cfg, str(model), samples)
        shutil.rmtree(model, ignore_errors=True)
    m = _probe(cfg, "unused", samples)
    return {"weight": w, "density": d, **m, "length_ratio": m["mean_tokens"] / ref["mean_tokens"] if ref["mean_tokens"] else float("nan"),
            "retained": m["accuracy"] / ref["accuracy"] if ref["accuracy"] else float("nan")}


def _ok(p: dict[str, Any], cfg: MergeSearchConfig, ref: dict[str, float]) -> bool:
    return p["accuracy"] >= (1 - cfg.accuracy_tolerance) * ref["accuracy"]


def _plot(points: list[dict[str, Any]], cfg: MergeSearchConfig, chosen: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for d in sorted({p["density"] for p in points}):
        ps = sorted((p for p in points if p["density"] == d), key=lambda p: p["weight"])
        ax.plot([p["weight"] for p in ps], [p["length_ratio"] for p in ps], "o-", label=f"length ratio (density {d})")
        ax.plot([p["weight"] for p in ps], [p["accuracy"] for p in ps], "s--", label=f"accuracy (density {d})")
    ax.axhline(cfg.target_length_ratio, color="gray", lw=0.8, ls=":", label="target ratio")
    ax.axvline(chosen["weight"], color="red", lw=0.8, label="chosen")
    ax.set_xlabel("merge weight")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def merge_search(cfg: MergeSearchConfig) -> Path:
    """Run the search (see the module docstring); returns the output directory."""
    t0 = time.time()
    out = Path(cfg.out)
    if any(not 0 < d <= 1 for d in cfg.densities) or any(not 0 <= w <= 1 for w in cfg.weights):
        raise UserError("merge-search: densities must be in (0, 1] and weights in [0, 1]")
    work = out.parent / f".{out.name}.work"
    ref = _probe(cfg, cfg.finetuned, work / "finetuned")
    points: list[dict[str, Any]] = []
    for d in cfg.densities:
        if cfg.search == "grid":
            points += [_point(cfg, work, w, d, ref) for w in cfg.weights]
            continue
        lo, hi = 0.0, 1.0
        for _ in range(cfg.steps):
            mid = round((lo + hi) / 2, 6)
            p = _point(cfg, work, mid, d, ref)
            points.append(p)
            lo, hi = (lo, mid) if p["length_ratio"] > cfg.target_length_ratio else (mid, hi)
    good = [p for p in points if _ok(p, cfg, ref)]
    chosen = min(good, key=lambda p: abs(p["length_ratio"] - cfg.target_length_ratio)) if good else max(points, key=lambda p: p["accuracy"])
    chosen = {**chosen, "within_tolerance": bool(good)}
    with atomic_dir(out, overwrite=True) as tmp:
        _merge(cfg, chosen["weight"], chosen["density"], tmp / ".model")
        for f in (tmp / ".model").iterdir():
            if f.name != "manifest.json":
                f.rename(tmp / f.name)
        shutil.rmtree(tmp / ".model")
        buf = io.StringIO()
        cols = ["weight", "density", "length_ratio", "accuracy", "retained", "mean_tokens", "truncated"]
        wr = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
        wr.writeheader()
        wr.writerows(sorted(points, key=lambda p: (p["density"], p["weight"])))
        atomic_write_text(tmp / "curve.csv", buf.getvalue())
        _plot(points, cfg, chosen, tmp / "curve.png")
        atomic_write_json(tmp / "merge_search.json", {"finetuned": ref, "chosen": chosen, "points": points})
        write_manifest(tmp, stage="merge_search", config=cfg, inputs={"base": cfg.base, "finetuned": cfg.finetuned},
                       started_at=t0, counts={"points": len(points)},
                       extra={"chosen_weight": chosen["weight"], "chosen_density": chosen["density"]})
    shutil.rmtree(work, ignore_errors=True)
    return out
