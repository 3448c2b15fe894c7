"""Report sections for efficiency and learnability (the report's builder calls these).

- :func:`efficiency_section` — per model and benchmark: accuracy (n, Wilson 95% CI over samples),
  mean completion tokens, tokens per correct answer, reflection rate, outcome efficiency
  (:mod:`micota.scoring.efficiency`), and ``accuracy_vs_tokens.png``: every model of the report
  (TA fine-tuned, merged, each student variant) as one point per benchmark, accuracy against mean
  completion tokens, with the base and the fine-tunes labelled.
- :func:`learnability_section` — across the variants of a run, Spearman's rank correlation of each
  learnability metric (BPC, BPT, RSR, median surprisal …) with the trained students' accuracy, so a
  user sees which metric predicted learnability in their own setting (lower metric = more
  learnable, so a good predictor correlates NEGATIVELY with accuracy). With fewer than 3 variants
  the correlation is undefined (``None``).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

from micota.records import Sample
from micota.scoring.efficiency import efficiency_metrics
from micota.scoring.stats import wilson_ci


def _fmt(x: float | None, f: str = "{:.1f}") -> str:
    return "–" if x is None or x != x else f.format(x)


def plot_accuracy_vs_tokens(points: Mapping[str, Mapping[str, tuple[float, float]]], path: Path) -> Path:
    """``points[model][benchmark] = (mean tokens, accuracy)``: one marker per model, benchmarks labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    markers = "osD^v<>PX*"
    for k, (model, by_bench) in enumerate(points.items()):
        xs = [v[0] for v in by_bench.values()]
        ys = [100 * v[1] for v in by_bench.values()]
        ax.scatter(xs, ys, marker=markers[k % len(markers)], s=50, label=model)
        for (bench, (x, y)) in by_bench.items():
            ax.annotate(bench, (x, 100 * y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("mean completion tokens")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy vs. length, per model and benchmark")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def efficiency_section(models: Mapping[str, Sequence[Sample]], out_dir: str | Path, *,
                       levels: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """Markdown and a JSON-ready dict of efficiency per model and benchmark (``sample.source``).

    ``models`` maps a display name (e.g. ``"TA fine-tuned"``, ``"student: mid"``) to its graded
    samples; ``levels`` (problem id → MATH difficulty level) adds length by level. Writes
    ``accuracy_vs_tokens.png`` into ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    points: dict[str, dict[str, tuple[float, float]]] = {}
    lines = ["## Efficiency", "",
             "| model | benchmark | samples | accuracy % (95% CI) | mean tokens | tokens per correct | reflections / 1k tokens "
             "| reflections / response | outcome efficiency |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for model, samples in models.items():
        by: dict[str, list[Sample]] = defaultdict(list)
        for s in samples:
            by[s.source or "?"].append(s)
        results[model], points[model] = {}, {}
        for bench, ss in sorted(by.items()):
            m = efficiency_metrics(ss, levels=levels)
            acc = m["n_correct"] / m["n_samples"]
            mean_tok = m["tokens_total"] / m["n_samples"]
            m.update(accuracy=acc, accuracy_ci95=wilson_ci(m["n_correct"], m["n_samples"]), mean_tokens=mean_tok)
            results[model][bench], points[model][bench] = m, (mean_tok, acc)
            lo, hi = m["accuracy_ci95"]
            lines.append(f"| {model} | {bench} | {m['n_samples']} | {100 * acc:.1f} ({100 * lo:.1f}–{100 * hi:.1f}) | "
                         f"{mean_tok:.0f} | {_fmt(m['tokens_per_correct'], '{:.0f}')} | "
                         f"{_fmt(m['reflections_per_1k_tokens'], '{:.2f}')} | {_fmt(m['reflections_per_response'], '{:.2f}')} | "
                         f"{_fmt(m['outcome_efficiency'], '{:.3f}')} |")
    plot = plot_accuracy_vs_tokens(points, out / "accuracy_vs_tokens.png") if points else None
    lines += ["", "Tokens per correct = all completion tokens / correct completions; reflections: markers listed in "
              "`micota.scoring.efficiency.REFLECTION_MARKERS`; outcome efficiency ξ_O (arXiv 2412.21187) = mean over "
              "samples of the share of the completion up to the first statement of its (correct) final answer, 0 if wrong.",
              ""]
    if plot:
        lines += [f"![accuracy vs mean tokens]({plot.name})", ""]
    return "\n".join(lines), {"models": results, "plot": str(plot) if plot else None}


def _ranks(v: Sequence[float]) -> "Any":
    """1-based ranks, ties sharing their average rank."""
    import numpy as np

    a = np.asarray(v, dtype=float)
    order = a.argsort(kind="stable")
    r = np.empty(len(a))
    r[order] = np.arange(1, len(a) + 1)
    for val in np.unique(a):
        tie = a == val
        r[tie] = r[tie].mean()
    return r


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None below 3 points or with a constant side."""
    import numpy as np

    if len(x) != len(y):
        raise ValueError(f"spearman needs equal lengths ({len(x)} vs {len(y)})")
    if len(x) < 3:
        return None
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def learnability_section(metrics: Mapping[str, Mapping[str, float]],
                         accuracy: Mapping[str, float]) -> tuple[str, dict[str, Any]]:
    """Rank correlation of each learnability metric with student accuracy across variants.

    ``metrics[variant][metric]`` (e.g. from ``bpc/summary.json``: ``bpc_mean``, ``bpt_mean``,
    ``rsr_mean``, ``surprisal_q50``) and ``accuracy[variant]`` (the trained student's macro accuracy).
    """
    variants = [v for v in metrics if v in accuracy]
    names = sorted({m for v in variants for m in metrics[v]})
    rho = {}
    for m in names:
        vs = [v for v in variants if metrics[v].get(m) is not None]
        rho[m] = {"spearman": spearman([metrics[v][m] for v in vs], [accuracy[v] for v in vs]), "n_variants": len(vs)}
    lines = ["## Which learnability metric predicted accuracy", "",
             "| metric | Spearman ρ with student accuracy | variants |", "|---|---:|---:|"]
    lines += [f"| {m} | {_fmt(r['spearman'], '{:+.2f}')} | {r['n_variants']} |" for m, r in rho.items()]
    lines += ["", "Lower BPC/BPT/RSR/surprisal should mean more learnable data, so a useful metric has ρ near −1. "
              "With few variants (n above) a rank correlation is weak evidence.", ""]
    return "\n".join(lines), {"correlations": rho, "variants": variants}
