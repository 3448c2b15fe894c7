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
        ax.hist(vs, bins=bins, range=(min(allv), max(allv)) if allv else None, alpha=0.5, density=True, label=f"{name} (n={len(vs)})")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density (each series sums to 1)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_merge_curve(curve: dict, path: Path) -> Path | None:
    """Mean completion tokens (top) and accuracy (bottom) against the merge weight for every method
    of a merge search; the base (w = 0) and the fine-tune (w = 1) as dashed reference lines, the
    linear-interpolation reference points marked, truncated shares annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [p for p in curve.get("points") or [] if p.get("weight") is not None and p.get("mean_tokens") is not None]
    if not pts:
        return None
    fig, (ax_len, ax_acc) = plt.subplots(2, 1, figsize=(6, 5.5), sharex=True)
    groups: dict[tuple, list] = {}
    for p in pts:
        groups.setdefault((p.get("method"), p.get("density"), bool(p.get("reference"))), []).append(p)
    for (method, density, ref), ps in sorted(groups.items(), key=lambda kv: str(kv[0])):
        ps = sorted(ps, key=lambda p: p["weight"])
        label = f"{method}" + (f" (density {density})" if density is not None and not ref else "") + (" — reference" if ref else "")
        style = dict(marker="D", ls="none", ms=7) if ref else dict(marker="o", ls="-")
        ax_len.plot([p["weight"] for p in ps], [p["mean_tokens"] for p in ps], label=label, **style)
        ax_acc.plot([p["weight"] for p in ps], [p["accuracy"] for p in ps], label=label, **style)
        for p in ps:
            if p.get("truncated"):
                ax_len.annotate(f"{p['truncated']:.0%} cut", (p["weight"], p["mean_tokens"]), fontsize=6,
                                textcoords="offset points", xytext=(3, 3))
    for key, color, name in (("base", "gray", "TA base (w=0)"), ("finetuned", "black", "fine-tuned TA (w=1)")):
        ref = curve.get(key) or {}
        if ref.get("mean_tokens") is not None:
            ax_len.axhline(ref["mean_tokens"], color=color, ls="--", lw=1, label=name)
        if ref.get("accuracy") is not None:
            ax_acc.axhline(ref["accuracy"], color=color, ls="--", lw=1, label=name)
    ax_len.set_ylabel("mean completion tokens")
    ax_acc.set_ylabel("accuracy (dev split)")
    ax_acc.set_xlabel("merge weight (fine-tune's share)")
    ax_len.legend(fontsize=7)
    ax_len.set_title("Merge search on the dev split")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
