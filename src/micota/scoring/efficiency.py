"""Efficiency of graded completions: what the right answers cost.

For graded samples ``i = 1..N`` with ``T_i`` completion tokens and ``σ_i = 1`` if correct:

- **tokens per correct answer** = ``Σ_i T_i / Σ_i σ_i`` — every token spent (right and wrong
  completions) divided by the number of right ones; ``None`` when nothing is right.
- **reflection rate** — occurrences of the markers in :data:`REFLECTION_MARKERS` (case-insensitive,
  whole words): per 1,000 completion tokens ``1000 · Σ_i m_i / Σ_i T_i``, per response
  ``Σ_i m_i / N``, and the share of responses with at least one marker.
- **outcome efficiency** (Chen et al., "Do NOT Think That Much for 2+3=?", arXiv 2412.21187, eq. 1)
  ``ξ_O = (1/N) Σ_i σ_i · T̂_i / T_i``, where ``T̂_i`` is the length up to the end of the FIRST
  occurrence of the final (correct) answer in the completion. Lengths are measured in characters
  (a sample stores no token offsets), which approximates the token ratio. ``ξ_O`` is 1 when every
  response is right and stops as soon as it first states its answer; redundant re-checking after
  the answer lowers it; a wrong response contributes 0.
- **length by difficulty** — mean completion tokens per difficulty level (MATH-500 ``level`` 1–5),
  with n per level, when the caller passes the problems' levels.
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from typing import Any, Mapping, Sequence

from micota.records import Sample

#: Reflection markers, matched case-insensitively as whole words/phrases (apostrophes: ' or ’).
REFLECTION_MARKERS: tuple[str, ...] = (
    "wait", "double-check", "double check", "re-examine", "reexamine", "re-check", "recheck", "re-evaluate",
    "reconsider", "let me check", "let me verify", "let me double-check", "let me re-check", "let me recheck",
    "let me make sure", "let me see if", "verify", "hold on", "hmm", "recap", "on second thought",
    "i made a mistake", "that's not right", "that is not right", "alternatively",
)
# longest first, so "let me double-check" counts once, not also as "double-check"
_MARKER_RE = re.compile(
    r"(?<![\w-])(?:" + "|".join(re.escape(m).replace("'", "['’]").replace(r"\ ", r"\s+")
                               for m in sorted(REFLECTION_MARKERS, key=len, reverse=True)) + r")(?![\w-])",
    re.IGNORECASE)


def reflection_count(text: str) -> int:
    """Number of reflection markers in ``text`` (non-overlapping, longest match first)."""
    return len(_MARKER_RE.findall(text))


def first_answer_end(completion: str, answer: str) -> int | None:
    """Character index just after the first occurrence of ``answer`` in ``completion`` (None if absent).

    A number matches only as a whole number (``12`` is not found inside ``112`` or ``12.5``).
    """
    a = answer.strip()
    if not a:
        return None
    if re.fullmatch(r"-?\d+(?:\.\d+)?", a):
        m = re.search(r"(?<![\d.])" + re.escape(a) + r"(?![\d]|\.\d)", completion)
        return m.end() if m else None
    i = completion.find(a)
    return None if i < 0 else i + len(a)


def outcome_share(s: Sample) -> float:
    """``σ · T̂/T`` for one sample (characters): 0 when wrong, else the share up to its first answer."""
    if not s.correct or not s.completion:
        return 0.0
    cands = [x for x in (s.extracted, s.reference) if x]
    ends = [e for e in (first_answer_end(s.completion, c) for c in cands) if e is not None]
    end = min(ends) if ends else len(s.completion)  # right but never spelled out verbatim: the whole text
    return min(1.0, end / len(s.completion))


def efficiency_metrics(samples: Sequence[Sample], *, levels: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The metrics of the module doc for one benchmark's graded samples (a JSON-ready dict)."""
    n = len(samples)
    toks = sum(s.completion_tokens for s in samples)
    correct = sum(bool(s.correct) for s in samples)
    marks = [reflection_count(s.completion) for s in samples]
    out: dict[str, Any] = {
        "n_samples": n,
        "n_correct": correct,
        "tokens_total": toks,
        "tokens_per_correct": toks / correct if correct else None,
        "reflections_per_1k_tokens": 1000 * sum(marks) / toks if toks else None,
        "reflections_per_response": sum(marks) / n if n else None,
        "responses_with_reflection": sum(m > 0 for m in marks) / n if n else None,
        "outcome_efficiency": sum(outcome_share(s) for s in samples) / n if n else None,
    }
    if levels:
        by: dict[str, list[int]] = defaultdict(list)
        for s in samples:
            if s.problem_id in levels and levels[s.problem_id] is not None:
                by[str(levels[s.problem_id])].append(s.completion_tokens)
        out["tokens_by_level"] = {k: {"n": len(v), "mean_tokens": statistics.fmean(v)}
                                  for k, v in sorted(by.items())}
    return out
