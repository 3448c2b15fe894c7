"""``micota merge-search``: an accuracy × length Pareto search over merge methods, weights and densities.

Every point (method m, weight w, density d) merges the fine-tune onto its base
(``MergeConfig.two_model``: w is the fine-tune's share for every method), generates greedily on the
probe problems (the generation runner, so any backend) and grades the samples. The base and the
fine-tune are probed the same way. Per point::

    length_ratio = mean completion tokens(point) / mean completion tokens(fine-tune)
    retained     = accuracy(point) / accuracy(fine-tune)      (null when the fine-tune solves nothing)
    within_tolerance = retained is not null and retained >= 1 − accuracy_tolerance

plus truncation rate, reflection markers per 1k tokens (``micota.data.stats`` markers), n and a
95% bootstrap CI of the accuracy. **The probe must be a dev split, never the test split** the
results are reported on: the chosen point is a hyperparameter.

Search (no monotonicity assumed): a coarse grid ``methods × weights × densities`` (densities only
for methods that take one), then ``steps`` refinements, each probing the midpoint between the best
point so far and the better of its two weight-neighbours in the same (method, density) series (if
that midpoint was probed or the gap is under 0.002, the other neighbour, then the next best point).
Under ``target-length`` a neighbour whose length ratio lies on the other side of the target from the
best point's comes first (the two bracket the target, so the midpoint can land on it), then the better
one. The base is every series' point at weight 0 (no task vector: exactly the base), so a best point
at the lowest grid weight is refined towards 0 when the target lies below it — the length may jump
anywhere, including below the first grid weight.
``linear_reference_weights`` add plain interpolations ``(1−w)·base + w·fine-tune``: probed and
reported (``reference: true``), never selected nor refined.

Selection (``select``), over the non-reference points, by a total order (first is chosen):

- ``target-length``: points within tolerance first, closest ``|length_ratio − target_length_ratio|``,
  then higher accuracy; if none is within tolerance, the most accurate, then the closest.
- ``max-accuracy``: points with ``length_ratio <= max_length_ratio`` first, highest accuracy, then
  shorter; if none is short enough, the shortest.

The outcome (``selection`` in merge_search.json) states the two goals separately, for the chosen point:
``length_ratio`` (achieved), ``within_tolerance`` (its accuracy is within the tolerance) and
``target_reached`` (target-length: ``|length_ratio − target| <= length_tolerance``; max-accuracy:
``length_ratio <= max_length_ratio``); ``met`` = every goal of the rule holds (target-length: both;
max-accuracy: the length bound). A point chosen at length ratio 0.998 for a target of 0.5 is within
tolerance but has NOT reached the target, and says so.

``on_pareto``: no other point of the table (references included) has accuracy >= and mean tokens
<= with one of them strict.

Outputs in ``out``: the chosen merged model (re-merged with the same seed, so identical to the probed
one; its ``merge_report.json`` has the task-vector norms), ``merge_search.json`` (``base``,
``finetuned``, ``points``, ``chosen``, ``selection``; JSON ``null``, never NaN), ``merge_search.csv``,
``pareto.png``, ``manifest.json`` last. Work lives in a hidden sibling ``.<out>.work``: one directory
per point named by the sha256 of everything that determines its samples (method, weight, density,
seed, the fingerprints of base, fine-tune and probe file, generation settings), so a changed input
never reuses old samples and an interrupted search resumes; merged weights are deleted once probed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import shutil
import sys
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
    probe: str = Field(description="Probe problems: a JSONL file or benchmark name. Use a dev split, never the test split.")
    out: Path = Field(description="Output directory (chosen merged model, merge_search.json/.csv, pareto.png).")
    methods: list[str] = Field(default_factory=lambda: ["task_arithmetic", "ties", "dare_ties"],
                               description="Merge methods searched (any registered method; linear/slerp interpolate).")
    method: str | None = Field(None, description="One method (shorthand for methods: [METHOD]).")
    weights: list[float] = Field(default_factory=lambda: [0.3, 0.5, 0.7, 1.0],
                                 description="Coarse grid of weights (the fine-tune's share). The defaults include the published "
                                             "long-to-short settings (Wu et al., arXiv 2503.20641): task arithmetic 0.7, TIES 1.0.")
    densities: list[float] = Field(default_factory=lambda: [0.7, 0.8],
                                   description="Coarse grid of densities, for methods that take one (published: TIES 0.8, DARE >= 0.7).")
    steps: int = Field(2, ge=0, description="Refinement probes after the coarse grid.")
    select: Literal["target-length", "max-accuracy"] = Field("target-length", description="Selection rule.")
    target_length_ratio: float = Field(0.5, gt=0, description="target-length: wanted mean tokens relative to the fine-tune.")
    accuracy_tolerance: float = Field(0.1, ge=0, le=1, description="Within tolerance: accuracy >= (1 − tol) × the fine-tune's.")
    length_tolerance: float = Field(0.05, ge=0, description="target-length: the target counts as reached when "
                                    "|length ratio − target| <= this.")
    max_length_ratio: float | None = Field(None, gt=0, description="max-accuracy: longest allowed length ratio.")
    linear_reference_weights: list[float] = Field(default_factory=lambda: [0.5],
                                                  description="Plain (1−w)·base + w·fine-tune points: probed, reported, never selected.")
    seed: int = Field(0, description="Merge seed (and generation seed).")
    limit: int | None = Field(None, ge=1, description="Use only the first N probe problems.")
    max_new_tokens: int = Field(1024, ge=1, description="Generation limit on the probe.")
    batch_size: int = Field(8, ge=1, description="Generation batch size.")
    backend: str = Field("hf", description="Generation backend (hf, vllm).")
    data_dir: Path | None = Field(None, description="Benchmark data directory (when probe is a benchmark name).")
    dtype: str = Field("auto", description="Generation dtype.")
    device: str = Field("auto", description="Generation device.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per model (vllm).")


# ------------------------------------------------------------------ pure logic (tested on hand-made tables)
def pareto_flags(points: list[dict[str, Any]]) -> list[bool]:
    """For each point: is it on the accuracy (max) × mean tokens (min) Pareto front of ``points``?"""
    flags = []
    for p in points:
        dominated = any(q is not p and q["accuracy"] >= p["accuracy"] and q["mean_tokens"] <= p["mean_tokens"]
                        and (q["accuracy"] > p["accuracy"] or q["mean_tokens"] < p["mean_tokens"]) for q in points)
        flags.append(not dominated)
    return flags


def _dist(p: dict[str, Any], target: float) -> float:
    r = p.get("length_ratio")
    return abs(r - target) if r is not None else math.inf


def rank_key(p: dict[str, Any], cfg: MergeSearchConfig) -> tuple:
    """Sort key of the selection rule (smallest = best); see the module docstring."""
    acc = p["accuracy"]
    if cfg.select == "target-length":
        d = _dist(p, cfg.target_length_ratio)
        return (0, d, -acc) if p["within_tolerance"] else (1, -acc, d)
    r = p.get("length_ratio")
    r = math.inf if r is None else r
    return (0, -acc, r) if r <= cfg.max_length_ratio else (1, r, -acc)


def outcome(chosen: dict[str, Any], cfg: MergeSearchConfig) -> dict[str, Any]:
    """What the chosen point achieved, each goal separately (see the module docstring)."""
    r = chosen.get("length_ratio")
    within = bool(chosen["within_tolerance"])
    if cfg.select == "target-length":
        reached = r is not None and abs(r - cfg.target_length_ratio) <= cfg.length_tolerance + 1e-12
        met = within and reached
    else:
        reached = r is not None and r <= cfg.max_length_ratio
        met = reached
    return {"length_ratio": r, "within_tolerance": within, "target_reached": reached, "met": met}


def select(points: list[dict[str, Any]], cfg: MergeSearchConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """(chosen point, :func:`outcome`) over the non-reference points."""
    cands = [p for p in points if not p.get("reference")]
    if not cands:
        raise UserError("merge-search: no merge points to select from (methods/weights are empty)")
    chosen = min(cands, key=lambda p: rank_key(p, cfg))
    return chosen, outcome(chosen, cfg)


def _brackets(a: dict[str, Any], b: dict[str, Any], cfg: MergeSearchConfig) -> bool:
    """Do a and b lie on opposite sides of the target length ratio (target-length rule only)?"""
    ra, rb = a.get("length_ratio"), b.get("length_ratio")
    if cfg.select != "target-length" or ra is None or rb is None:
        return False
    t = cfg.target_length_ratio
    return (ra - t) * (rb - t) < 0


def next_refinement(points: list[dict[str, Any]], cfg: MergeSearchConfig, min_gap: float = 0.002,
                    base_row: dict[str, Any] | None = None) -> tuple[str, float | None, float] | None:
    """(method, density, weight) to probe next, or None: the midpoint between the best point and its
    weight-neighbour that brackets the target with it, else its better one, in the same series (else
    the other neighbour, else the next best point).
    ``base_row`` (the base probed as a point, :func:`_row`) stands at weight 0 of every series."""
    cands = sorted((p for p in points if not p.get("reference")), key=lambda p: rank_key(p, cfg))
    for best in cands:
        series = [p for p in cands if p["method"] == best["method"] and p["density"] == best["density"]]
        if base_row is not None and not any(p["weight"] == 0 for p in series):
            series.append({**base_row, "method": best["method"], "density": best["density"], "weight": 0.0})
        series.sort(key=lambda p: p["weight"])
        i = next(k for k, p in enumerate(series) if p is best)
        nbs = sorted([series[k] for k in (i - 1, i + 1) if 0 <= k < len(series)],
                     key=lambda p: (not _brackets(best, p, cfg), rank_key(p, cfg)))
        probed = {p["weight"] for p in series}
        for nb in nbs:
            mid = round((best["weight"] + nb["weight"]) / 2, 6)
            if abs(nb["weight"] - best["weight"]) >= min_gap and mid not in probed:
                return best["method"], best["density"], mid
    return None


# ------------------------------------------------------------------ probing
def _fingerprint(spec: str | Path | None) -> Any:
    """What identifies an input's content: the pipeline's :func:`~micota.pipeline.planner.fingerprint` of
    the file or folder (every file's sha256; weight files from the digest cache once hashed — the merges
    hash the same files); a name that is not a path (a hub id) as given."""
    if spec is None:
        return None
    from micota.pipeline.planner import fingerprint

    p = Path(spec)
    if p.exists():
        return {"path": str(p.resolve()), "content": fingerprint(p, {})}
    return {"name": str(spec)}


class _Prober:
    """Probes models into keyed work directories (``work/<label>-<key>/samples``)."""

    def __init__(self, cfg: MergeSearchConfig, work: Path):
        self.cfg, self.work = cfg, work
        self.gen = {k: getattr(cfg, k) for k in ("limit", "max_new_tokens", "batch_size", "backend", "dtype", "device",
                                                  "tensor_parallel_size", "seed")}
        self.gen["probe"] = _fingerprint(cfg.probe)
        self.gen["data_dir"] = _fingerprint(cfg.data_dir) if cfg.data_dir and not Path(cfg.probe).is_file() else None
        self.inputs = {"base": _fingerprint(cfg.base), "finetuned": _fingerprint(cfg.finetuned)}

    def _dir(self, label: str, what: dict[str, Any]) -> Path:
        key = hashlib.sha256(json.dumps({"generation": self.gen, **what}, sort_keys=True, default=str).encode()).hexdigest()[:16]
        d = self.work / f"{label}-{key}"
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_json(d / "key.json", {"generation": self.gen, **what})
        return d

    def model(self, role: Literal["base", "finetuned"]) -> dict[str, Any]:
        d = self._dir(role, {"model": self.inputs[role]})
        return self._probe(getattr(self.cfg, role), d / "samples")

    def point(self, method: str, weight: float, density: float | None) -> dict[str, Any]:
        what = {"merge": {"method": method, "weight": weight, "density": density, "seed": self.cfg.seed, **self.inputs}}
        label = f"{method}-w{weight:.4f}" + (f"-d{density:.4f}" if density is not None else "")
        d = self._dir(label, what)
        if not is_complete(d / "samples"):
            model = d / "model"
            if not is_complete(model):
                _merge(self.cfg, method, weight, density, model)
            self._probe(str(model), d / "samples")
            shutil.rmtree(model, ignore_errors=True)
        return self._probe("unused", d / "samples")

    def _probe(self, model: str, out: Path) -> dict[str, Any]:
        from micota.data.stats import _MARKER_RE
        from micota.generation.runner import GenerateConfig, generate
        from micota.generation.graded import load_graded
        from micota.scoring.stats import bootstrap_ci

        cfg = self.cfg
        if not is_complete(out):
            generate(GenerateConfig(model=model, problems=cfg.probe, out=out, max_new_tokens=cfg.max_new_tokens,
                                    limit=cfg.limit, batch_size=cfg.batch_size, backend=cfg.backend, data_dir=cfg.data_dir,
                                    dtype=cfg.dtype, device=cfg.device, tensor_parallel_size=cfg.tensor_parallel_size,
                                    seed=cfg.seed))
        samples, _ = load_graded(out)
        n = len(samples)
        if not n:
            raise UserError(f"merge-search: the probe {cfg.probe} gave no samples")
        correct = [float(bool(s.correct)) for s in samples]
        tokens = sum(s.completion_tokens for s in samples)
        markers = sum(len(r.findall(s.completion)) for s in samples for r in _MARKER_RE.values())
        return {"accuracy": sum(correct) / n, "accuracy_ci": list(bootstrap_ci(correct, seed=cfg.seed)),
                "mean_tokens": tokens / n, "truncated": sum(s.finish_reason == "length" for s in samples) / n,
                "reflection_per_1k": 1000 * markers / tokens if tokens else None, "n": n}


def _merge(cfg: MergeSearchConfig, method: str, w: float, d: float | None, out: Path) -> Path:
    from micota.merging import MergeConfig, merge

    return merge(MergeConfig.two_model(cfg.base, cfg.finetuned, method=method, weight=w, density=d, seed=cfg.seed,
                                       out=out, overwrite=True))


def _row(method: str, w: float, d: float | None, m: dict[str, Any], ft: dict[str, Any], cfg: MergeSearchConfig,
         reference: bool = False) -> dict[str, Any]:
    ratio = m["mean_tokens"] / ft["mean_tokens"] if ft["mean_tokens"] else None
    retained = m["accuracy"] / ft["accuracy"] if ft["accuracy"] else None
    return {"method": method, "weight": w, "density": d, **m, "length_ratio": ratio, "retained": retained,
            "within_tolerance": retained is not None and retained >= 1 - cfg.accuracy_tolerance - 1e-12,
            "on_pareto": False, "reference": reference}


def _takes_density(method: str) -> bool:
    """Does the density change this method's result? (task_arithmetic accepts one, as in mergekit, but ignores it.)"""
    from micota.merging import METHODS

    return "density" in METHODS[method].per_model and method != "task_arithmetic"


def _check(cfg: MergeSearchConfig) -> list[str]:
    from micota.merging import METHODS

    methods = [cfg.method] if cfg.method else list(dict.fromkeys(cfg.methods))
    for m in methods:
        if m not in METHODS:
            raise UserError(f"merge-search: unknown method {m!r} (known: {', '.join(sorted(METHODS))})")
    if not methods or not cfg.weights:
        raise UserError("merge-search: methods and weights must not be empty")
    if any(not 0 < d <= 1 for d in cfg.densities) or any(w < 0 for w in cfg.weights):
        raise UserError("merge-search: densities must be in (0, 1] and weights >= 0")
    if any(w > 1 for w in cfg.weights) and any(m in ("linear", "slerp") for m in methods):
        raise UserError("merge-search: linear/slerp weights must be in [0, 1] (the fine-tune's share)")
    if any(not 0 <= w <= 1 for w in cfg.linear_reference_weights):
        raise UserError("merge-search: linear_reference_weights must be in [0, 1]")
    if cfg.select == "max-accuracy" and cfg.max_length_ratio is None:
        raise UserError("merge-search: --select max-accuracy needs --max-length-ratio")
    if not cfg.densities and any(_takes_density(m) for m in methods):
        raise UserError("merge-search: densities must not be empty for methods that take a density")
    return methods


def merge_search(cfg: MergeSearchConfig) -> Path:
    """Run the search (see the module docstring); returns the output directory."""
    t0 = time.time()
    out = Path(cfg.out)
    methods = _check(cfg)
    prober = _Prober(cfg, out.parent / f".{out.name}.work")
    base, ft = prober.model("base"), prober.model("finetuned")
    points: list[dict[str, Any]] = []

    def probe(method: str, w: float, d: float | None, reference: bool = False) -> None:
        points.append(_row(method, w, d, prober.point(method, w, d), ft, cfg, reference))
        p = points[-1]
        print(f"merge-search: {method} w={w:g}" + (f" d={d:g}" if d is not None else "") + (" (reference)" if reference else "")
              + f": accuracy {p['accuracy']:.3f}, length ratio {_fmt(p['length_ratio'])}, truncated {p['truncated']:.2f}",
              file=sys.stderr, flush=True)

    for m in methods:
        for d in (sorted(set(cfg.densities)) if _takes_density(m) else [None]):
            for w in sorted({round(x, 6) for x in cfg.weights}):
                probe(m, w, d)
    base_row = _row("base", 0.0, None, base, ft, cfg)
    for _ in range(cfg.steps):
        nxt = next_refinement(points, cfg, base_row=base_row)
        if nxt is None:
            break
        m, d, w = nxt
        probe(m, w, d)
    for w in sorted({round(x, 6) for x in cfg.linear_reference_weights}):
        probe("linear", w, None, reference=True)
    for p, on in zip(points, pareto_flags(points)):
        p["on_pareto"] = on
    chosen, achieved = select(points, cfg)
    met = achieved["met"]
    selection = {"rule": cfg.select,
                 "target": cfg.target_length_ratio if cfg.select == "target-length" else cfg.max_length_ratio,
                 "tolerance": cfg.accuracy_tolerance,
                 "length_tolerance": cfg.length_tolerance if cfg.select == "target-length" else None, **achieved}
    result = _finite({"base": base, "finetuned": ft, "points": points, "chosen": dict(chosen), "selection": selection,
                      "probe": cfg.probe})

    with atomic_dir(out, overwrite=True) as tmp:
        _merge(cfg, chosen["method"], chosen["weight"], chosen["density"], tmp / ".model")
        for f in (tmp / ".model").iterdir():
            if f.name != "manifest.json":
                f.rename(tmp / f.name)
        shutil.rmtree(tmp / ".model")
        atomic_write_text(tmp / "merge_search.csv", _csv(result))
        _plot(result, cfg, tmp / "pareto.png")
        atomic_write_text(tmp / "merge_search.json", json.dumps(result, indent=2, allow_nan=False) + "\n")
        write_manifest(tmp, stage="merge_search", config=cfg, inputs={"base": cfg.base, "finetuned": cfg.finetuned},
                       started_at=t0, counts={"points": len(points)},
                       extra={"chosen": {k: chosen[k] for k in ("method", "weight", "density")},
                              **{k: achieved[k] for k in ("within_tolerance", "target_reached", "met")}})
    shutil.rmtree(prober.work, ignore_errors=True)
    if not met:
        print(f"warning: merge-search: {describe(result)}", file=sys.stderr, flush=True)
    return out


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def describe(result: dict[str, Any]) -> str:
    """One line: what was chosen, and whether the accuracy tolerance held and the length target was reached."""
    c, s = result["chosen"], result["selection"]
    point = f"{c['method']} weight {c['weight']:g}" + (f" density {c['density']:g}" if c["density"] is not None else "")
    stats = (f"accuracy {c['accuracy']:.3f} (retained {_fmt(c['retained'])} of the fine-tune's "
             f"{result['finetuned']['accuracy']:.3f}), length ratio {_fmt(c['length_ratio'])}")
    undefined = " (the fine-tune solves nothing, so retention is undefined)" if not result["finetuned"]["accuracy"] else ""
    acc = (f"within accuracy tolerance {s['tolerance']:g}" if s["within_tolerance"]
           else f"NOT within accuracy tolerance {s['tolerance']:g}{undefined}")
    if s["rule"] == "target-length":
        goal = f"target length ratio {s['target']:g} ± {s['length_tolerance']:g}"
        return (f"chose {point}: {stats}; {goal}: {'reached' if s['target_reached'] else 'NOT reached'}; {acc}; "
                f"goal {'met' if s['met'] else 'NOT met'}")
    goal = f"max accuracy at length ratio <= {s['target']:g}"
    return (f"chose {point}: {stats}; {goal}: {'reached' if s['target_reached'] else 'NOT reached (no point is that short)'}; "
            f"{acc}")


def summary(out: str | Path) -> str:
    """The CLI's stdout: the chosen point and the output directory."""
    return describe(json.loads((Path(out) / "merge_search.json").read_text())) + f"\n{out}"


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


CSV_COLS = ["method", "weight", "density", "reference", "accuracy", "accuracy_ci_lo", "accuracy_ci_hi", "n",
            "mean_tokens", "length_ratio", "retained", "within_tolerance", "on_pareto", "truncated", "reflection_per_1k", "chosen"]


def _csv(result: dict[str, Any]) -> str:
    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=CSV_COLS, extrasaction="ignore")
    wr.writeheader()
    c = result["chosen"]
    rows = [{**result[r], "method": r, "length_ratio": None, "retained": None} for r in ("base", "finetuned")] + result["points"]
    for p in rows:
        ci = p.get("accuracy_ci") or [None, None]
        wr.writerow({k: ("" if v is None else v) for k, v in {
            **p, "accuracy_ci_lo": ci[0], "accuracy_ci_hi": ci[1],
            "chosen": p.get("method") == c["method"] and p.get("weight") == c["weight"] and p.get("density") == c["density"]
            and not p.get("reference")}.items()})
    return buf.getvalue()


def _plot(result: dict[str, Any], cfg: MergeSearchConfig, path: Path) -> None:
    """Accuracy vs mean tokens (Pareto front, base, fine-tune, tolerance band, target) beside truncation vs mean tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base, ft, pts, c = result["base"], result["finetuned"], result["points"], result["chosen"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    markers = dict(zip(sorted({p["method"] for p in pts if not p["reference"]}), "osD^vP*hX"))
    for m, mk in markers.items():
        ps = [p for p in pts if p["method"] == m and not p["reference"]]
        for a, key in ((ax, "accuracy"), (ax2, "truncated")):
            a.scatter([p["mean_tokens"] for p in ps], [p[key] for p in ps], marker=mk, alpha=0.75, label=m)
    refs = [p for p in pts if p["reference"]]
    for a, key in ((ax, "accuracy"), (ax2, "truncated")):
        if refs:
            a.scatter([p["mean_tokens"] for p in refs], [p[key] for p in refs], marker="x", color="gray",
                      label="linear interpolation (reference)")
        a.scatter([base["mean_tokens"]], [base[key]], marker="*", s=180, color="black", label="base", zorder=5)
        a.scatter([ft["mean_tokens"]], [ft[key]], marker="*", s=180, color="tab:red", label="fine-tune", zorder=5)
        a.scatter([c["mean_tokens"]], [c[key]], s=260, facecolors="none", edgecolors="green", linewidths=2,
                  label="chosen", zorder=6)
        a.set_xlabel("mean completion tokens on the probe")
    front = sorted((p for p in pts if p["on_pareto"]), key=lambda p: p["mean_tokens"])
    ax.plot([p["mean_tokens"] for p in front], [p["accuracy"] for p in front], "k--", lw=0.8, label="Pareto front")
    if ft["accuracy"]:
        ax.axhspan((1 - cfg.accuracy_tolerance) * ft["accuracy"], max(1.0, ft["accuracy"]), color="tab:green", alpha=0.08,
                   label=f"within tolerance (>= {1 - cfg.accuracy_tolerance:g} × fine-tune)")
    if cfg.select == "target-length":
        ax.axvline(cfg.target_length_ratio * ft["mean_tokens"], color="gray", ls=":", lw=1,
                   label=f"target length ({cfg.target_length_ratio:g} × fine-tune)")
    elif cfg.max_length_ratio is not None:
        ax.axvline(cfg.max_length_ratio * ft["mean_tokens"], color="gray", ls=":", lw=1,
                   label=f"max length ({cfg.max_length_ratio:g} × fine-tune)")
    ax.set_ylabel(f"accuracy on the probe (n = {ft['n']})")
    ax.set_title("accuracy vs length")
    ax2.set_ylabel("truncation rate (hit max_new_tokens)")
    ax2.set_title("truncation vs length")
    ax2.set_ylim(-0.03, 1.03)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = ["MergeSearchConfig", "merge_search", "pareto_flags", "select", "next_refinement", "rank_key", "describe",
           "summary"]
