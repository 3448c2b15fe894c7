"""Plots for the report (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path


def plot_histograms(series: dict[str, list[float]], path: Path, *, title: str, xlabel: str = "completion tokens") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    allv = [v for vs in series.values() for v in vs]
    bins = 30 if allv and max(allv) > min(allv) else 5
    for name, vs in series.items():
        ax.hist(vs, bins=bins, range=(min(allv), max(allv)) if allv else None, alpha=0.5, label=f"{name} (n={len(vs)})")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
