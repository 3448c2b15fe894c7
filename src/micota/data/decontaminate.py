"""``micota decontaminate``: flag training problems that share an n-gram with a benchmark problem.

Text → words: lower-cased, every maximal run of letters or digits is a word (LaTeX commands lose
their backslash, punctuation and ``$`` vanish), so ``$x^2 + 3x$`` and ``x^2+3x`` give the same
words. A training problem is *contaminated* by benchmark problem ``b`` when they share an n-gram of
``ngram`` consecutive words (8 by default, as open-r1's decontamination); a benchmark problem with
fewer words than that contributes its whole word sequence, so a short exact duplicate is still
caught. Only the problem text is compared: the ``problem`` of :class:`micota.records.Problem` rows,
or the prompt messages of :class:`micota.records.SftExample` rows (completions are never read).

Input: a JSONL file of problems, a directory holding ``data.jsonl``, or an SFT dataset (the row
type is detected from the first row). Output directory: ``data.jsonl`` (same row type; flagged rows
dropped, or kept with ``meta.contaminated`` when ``keep``), ``flagged.jsonl`` (one row per flagged
training row: its id and every ``benchmark:problem_id`` it matched, with one shared n-gram),
``decontamination.json`` (counts, per benchmark) and ``manifest.json``.
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from micota.config import StageConfig
from micota.data.benchmarks import load_problems, problems_source
from micota.errors import EmptyInputError, UserError
from micota.io import atomic_dir, atomic_write_json
from micota.manifest import write_manifest
from micota.records import Problem, SftExample, read_jsonl, write_jsonl_atomic

_WORD = re.compile(r"[^\W_]+")


class DecontaminateConfig(StageConfig):
    data: str = Field(description="Training problems (JSONL of id/problem/answer) or SFT dataset (directory with data.jsonl, or .jsonl).")
    out: str = Field(description="Output directory (data.jsonl, flagged.jsonl, decontamination.json).")
    against: list[str] = Field(default_factory=lambda: ["aime24", "aime25", "amc23", "olympiadbench", "math500", "gsm8k"],
                               description="Benchmarks (names or problem JSONL files) to decontaminate against.")
    ngram: int = Field(8, ge=1, description="Words per n-gram; a shared n-gram flags a training problem.")
    keep: bool = Field(False, description="Keep flagged rows (marked in meta.contaminated) instead of dropping them.")
    data_dir: Path | None = Field(None, description="Directory of benchmark JSONL files (else $MICOTA_DATA_DIR, ../shared/data/benchmarks).")

    @field_validator("against")
    @classmethod
    def _nonempty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("give at least one benchmark")
        return v


def words(text: str) -> list[str]:
    """The word sequence n-grams are built from (see the module doc)."""
    return _WORD.findall(text.lower())


def ngrams(ws: list[str], n: int) -> set[tuple[str, ...]]:
    """All n-grams of ``ws``; the whole sequence when it is shorter than ``n`` (and not empty)."""
    if len(ws) < n:
        return {tuple(ws)} if ws else set()
    return {tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)}


def _read_rows(data: str) -> tuple[list[Problem] | list[SftExample], type]:
    p = Path(data)
    f = p / "data.jsonl" if p.is_dir() else p
    if not f.is_file():
        raise UserError(f"{data}: no such dataset (expected a .jsonl file or a directory with data.jsonl)")
    first = next((line for line in f.read_text(encoding="utf-8").splitlines() if line.strip()), None)
    if first is None:
        raise EmptyInputError(f"{f}: no rows to decontaminate")
    try:
        kind = SftExample if "completion" in json.loads(first) else Problem
    except json.JSONDecodeError:
        raise UserError(f"{f}:1: not valid JSON") from None
    return read_jsonl(f, kind), kind


def _text(row: Problem | SftExample) -> str:
    if isinstance(row, SftExample):
        return "\n".join(m.content for m in row.prompt if m.role != "system")
    return row.problem


def decontaminate(cfg: DecontaminateConfig) -> Path:
    """Flag, drop (or keep and mark) training rows sharing an n-gram with the benchmarks; see the module doc."""
    t0 = time.time()
    out = Path(cfg.out)
    if out.exists():
        raise UserError(f"{out}: output already exists (remove it or choose another path)")
    rows, kind = _read_rows(cfg.data)
    index: dict[tuple[str, ...], list[str]] = defaultdict(list)  # n-gram -> "benchmark:problem_id"
    short_lengths: set[int] = set()
    sources = {}
    for b in cfg.against:
        probs = load_problems(b, data_dir=cfg.data_dir)
        sources[b] = problems_source(b, cfg.data_dir)
        name = b if "/" not in b and not b.endswith(".jsonl") else Path(b).stem
        for q in probs:
            for g in ngrams(words(q.problem), cfg.ngram):
                index[g].append(f"{name}:{q.id}")
                if len(g) < cfg.ngram:
                    short_lengths.add(len(g))
    kept, flagged = [], []
    per_bench: dict[str, int] = defaultdict(int)
    for r in rows:
        ws = words(_text(r))
        hits: dict[str, tuple[str, ...]] = {}
        for n in (cfg.ngram, *sorted(short_lengths)):
            for g in ngrams(ws, n) if len(ws) >= n else ():
                for ref in index.get(g, ()):
                    hits.setdefault(ref, g)
        if hits:
            flagged.append({"id": r.id, "matches": sorted(hits), "ngram": " ".join(next(iter(hits.values())))})
            for bench in {h.split(":", 1)[0] for h in hits}:
                per_bench[bench] += 1
            if cfg.keep:
                kept.append(r.model_copy(update={"meta": {**r.meta, "contaminated": sorted(hits)}}))
        else:
            kept.append(r)
    if not kept:
        raise EmptyInputError(f"{cfg.data}: every row shares a {cfg.ngram}-gram with the benchmarks")
    report: dict[str, Any] = {
        "rows": len(rows), "flagged": len(flagged), "dropped": 0 if cfg.keep else len(flagged), "kept": len(kept),
        "flagged_by_benchmark": {b: per_bench.get(b if "/" not in b else Path(b).stem, 0) for b in cfg.against},
        "ngram": cfg.ngram, "row_type": kind.__name__, "benchmark_files": sources,
    }
    with atomic_dir(out) as tmp:
        write_jsonl_atomic(tmp / "data.jsonl", kept)
        (tmp / "flagged.jsonl").write_text("".join(json.dumps(f, ensure_ascii=False) + "\n" for f in flagged), encoding="utf-8")
        atomic_write_json(tmp / "decontamination.json", report)
        write_manifest(tmp, stage="decontaminate", config=cfg, inputs={"data": cfg.data},
                       counts={"rows": len(rows), "flagged": len(flagged), "kept": len(kept)}, started_at=t0)
    return out
