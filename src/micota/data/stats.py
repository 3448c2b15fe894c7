"""Dataset statistics, side by side: length, reflection and repetition of completions.

Each input is an SFT dataset (directory with ``data.jsonl`` or a JSONL of SftExample rows) or a
samples directory/file (Sample rows). Per input, over the completions:

- ``tokens`` / ``chars``: mean, median, p90, max (tokens under the named tokenizer);
- ``reflection_per_1k``: occurrences of the reflection markers ("wait", "let me check",
  "alternatively", "hmm", "double-check"; case-insensitive, whole words) per 1,000 tokens, also
  per marker;
- ``repeated_ngram_ratio``: mean over completions of 1 - unique/total word 4-grams — how much of a
  trace repeats itself (the "overthinking" signature: reflection without progress);
- ``truncation_rate``: share of samples with ``finish_reason == "length"`` (samples inputs only).

Outputs (when ``out`` is set): ``stats.json``, ``stats.md`` (one column per input), ``lengths.png``
(token-length histograms overlaid, each normalised to its own dataset — the y axis is the share of
that dataset's completions, so a 50-row set is not hidden under a 12k-row one — with n in the
legend and the generation cap marked: ``max_new_tokens`` of a samples input's generate manifest,
or ``max_tokens`` of a filtered dataset's), ``manifest.json`` last.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from micota.config import StageConfig
from micota.errors import UserError
from micota.io import atomic_dir, atomic_write_json, atomic_write_text
from micota.manifest import empty_reason, read_manifest, write_manifest

MARKERS = ("wait", "let me check", "alternatively", "hmm", "double-check")
_MARKER_RE = {m: re.compile(r"\b" + re.escape(m).replace(r"\ ", r"\s+") + r"\b", re.IGNORECASE) for m in MARKERS}
NGRAM = 4


class StatsConfig(StageConfig):
    inputs: list[str] = Field(..., min_length=1, description="Datasets or samples directories/files to compare")
    tokenizer: str = Field("smollm2-135m", description="Tokenizer model spec for token counts")
    out: str | None = Field(None, description="Output directory (stats.json, stats.md, lengths.png, manifest.json)")
    labels: list[str] | None = Field(None, description="Column labels, one per input (default: the input names)")


def load_completions(path: str | Path) -> tuple[list[str], list[bool] | None]:
    """(completion texts, truncated flags or None for SFT datasets) of one input."""
    from micota.filtering import read_samples
    from micota.training.data import completion_text, dataset_file, read_sft_dataset

    p = Path(path)
    is_dataset = (p.is_dir() and (p / "data.jsonl").is_file()) or (p.is_file() and _first_row_is_sft(p))
    if is_dataset:
        return [completion_text(ex) for ex in read_sft_dataset(dataset_file(p))], None
    samples = read_samples(p)
    if not samples:
        raise UserError(f"{p}: no samples")
    return [s.completion for s in samples], [s.finish_reason == "length" for s in samples]


def _first_row_is_sft(path: Path) -> bool:
    with open(path, "rb") as f:
        line = f.readline()
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False  # let the Sample reader name the problem
    return isinstance(row, dict) and isinstance(row.get("completion"), list)


def _dist(xs: list[int]) -> dict[str, float]:
    a = np.asarray(xs, dtype=float)
    return {"mean": round(float(a.mean()), 2), "median": float(np.median(a)), "p90": float(np.percentile(a, 90)), "max": int(a.max())}


def repeated_ngram_ratio(text: str, n: int = NGRAM) -> float:
    """1 - (distinct word n-grams / all word n-grams); 0 for texts shorter than n words."""
    words = text.lower().split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def text_stats(texts: list[str], token_counts: list[int], truncated: list[bool] | None) -> dict[str, Any]:
    total_tokens = max(sum(token_counts), 1)
    per_marker = {m: sum(len(r.findall(t)) for t in texts) for m, r in _MARKER_RE.items()}
    return {
        "n": len(texts),
        "tokens": _dist(token_counts),
        "chars": _dist([len(t) for t in texts]),
        "reflection_per_1k": round(1000 * sum(per_marker.values()) / total_tokens, 3),
        "reflection_per_1k_by_marker": {m: round(1000 * c / total_tokens, 3) for m, c in per_marker.items()},
        "repeated_ngram_ratio": round(float(np.mean([repeated_ngram_ratio(t) for t in texts])), 4),
        "truncation_rate": None if truncated is None else round(sum(truncated) / len(truncated), 4),
    }


def _markdown(stats: dict[str, dict[str, Any]]) -> str:
    labels = list(stats)
    rows = [("examples", lambda s: s["n"])]
    for k in ("tokens", "chars"):
        for q in ("mean", "median", "p90", "max"):
            rows.append((f"{k} {q}", lambda s, k=k, q=q: s[k][q]))
    rows += [("reflection / 1k tok", lambda s: s["reflection_per_1k"]),
             ("repeated 4-gram ratio", lambda s: s["repeated_ngram_ratio"]),
             ("truncation rate", lambda s: "—" if s["truncation_rate"] is None else s["truncation_rate"])]
    lines = ["| metric | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    lines += [f"| {name} | " + " | ".join(str(f(stats[lab])) for lab in labels) + " |" for name, f in rows]
    return "\n".join(lines) + "\n"


def token_cap(path: str | Path) -> tuple[str, int] | None:
    """The token cap an input was made under: ``("max_new_tokens", 1024)`` for samples from
    ``micota generate``/``eval``, ``("max_tokens", 16000)`` for a ``micota filter`` dataset, else None."""
    p = Path(path)
    cfg = (read_manifest(p if p.is_dir() else p.parent) or {}).get("config") or {}
    for key in ("max_new_tokens", "max_tokens"):
        if isinstance(cfg.get(key), int):
            return key, cfg[key]
    return None


def _plot(lengths: dict[str, list[int]], path: Path, caps: dict[str, tuple[str, int]] | None = None) -> dict[str, Any]:
    """Overlaid token-length histograms, each normalised to its own n; dashed lines at the token caps.
    Returns what was drawn: ``{"heights": {label: bar heights}, "caps": {x: legend text}, "legend": [...]}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    hi = max(max(v) for v in lengths.values())
    by_cap: dict[tuple[str, int], list[str]] = {}
    for lab, cap in (caps or {}).items():
        by_cap.setdefault(cap, []).append(lab)
    shown = {c: labs for c, labs in by_cap.items() if c[1] <= 1.5 * hi}  # a far-away cap would squash the bars
    right = max([hi, *(c[1] for c in shown)]) + 1
    bins = np.linspace(0, right, 31)
    drawn: dict[str, Any] = {"heights": {}, "caps": {}}
    for lab, v in lengths.items():
        heights, _, _ = ax.hist(v, bins=bins, weights=np.full(len(v), 1 / len(v)), alpha=0.5, label=f"{lab} (n={len(v)})")
        drawn["heights"][lab] = [float(h) for h in heights]
    for (key, cap), labs in by_cap.items():
        text = f"cap {key}={cap} ({', '.join(labs)})"
        drawn["caps"][cap] = text
        if (key, cap) in shown:
            ax.axvline(cap, color="black", linestyle="--", linewidth=1, label=text)
        else:
            ax.annotate(text + " →", xy=(1, 0.97), xycoords="axes fraction", ha="right", va="top", fontsize=7)
    ax.set_xlabel("completion tokens")
    ax.set_ylabel("share of the dataset's completions")
    ax.legend(fontsize=8)
    drawn["legend"] = [t.get_text() for t in ax.get_legend().get_texts()]
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn


def dataset_stats(cfg: StatsConfig) -> dict[str, Any]:
    """Statistics per input, keyed by label; writes the report files when ``cfg.out`` is set."""
    from micota.models import load_tokenizer

    t0 = time.time()
    labels = cfg.labels or [Path(p).name or str(p) for p in cfg.inputs]
    if len(labels) != len(cfg.inputs):
        raise UserError(f"--labels has {len(labels)} names for {len(cfg.inputs)} inputs")
    if len(set(labels)) != len(labels):
        raise UserError(f"labels must be distinct (got {', '.join(labels)}); pass --labels")
    if cfg.out and Path(cfg.out).exists():
        raise UserError(f"{cfg.out}: output already exists (remove it or choose another path)")
    tok = load_tokenizer(cfg.tokenizer)
    stats: dict[str, dict[str, Any]] = {}
    lengths: dict[str, list[int]] = {}
    caps: dict[str, tuple[str, int]] = {}
    empty: dict[str, str] = {}
    for lab, path in zip(labels, cfg.inputs):
        if why := empty_reason(path):  # a pipeline stage that produced nothing (e.g. no sample kept)
            empty[lab] = why
            continue
        texts, truncated = load_completions(path)
        counts = [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]
        stats[lab] = {"input": str(path), **text_stats(texts, counts, truncated)}
        lengths[lab] = counts
        if cap := token_cap(path):
            caps[lab] = cap
            stats[lab]["token_cap"] = {cap[0]: cap[1]}
    if cfg.out:
        with atomic_dir(cfg.out) as tmp:
            atomic_write_json(tmp / "stats.json", {"tokenizer": cfg.tokenizer, "datasets": stats, "empty": empty})
            note = "".join(f"\n- {lab}: empty ({why})" for lab, why in empty.items())
            atomic_write_text(tmp / "stats.md", f"Completion statistics (tokenizer: `{cfg.tokenizer}`)\n\n"
                              + (_markdown(stats) if stats else "No non-empty input.\n") + note + ("\n" if note else ""))
            if lengths:
                _plot(lengths, tmp / "lengths.png", caps)
            write_manifest(tmp, stage="stats", config=cfg, inputs={lab: p for lab, p in zip(labels, cfg.inputs)},
                           counts={lab: s["n"] for lab, s in stats.items()}, started_at=t0)
    return stats
