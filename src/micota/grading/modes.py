"""Grading modes: a registry of ``grader(completion, reference) -> GradeResult`` functions.

Built-in modes (:data:`GRADERS`):

- ``default`` — the last ``\\boxed{}``/``\\fbox{}`` of the completion, compared with math-verify:
  ``verify(parse(gold), parse("\\boxed{<answer>}"))``. The gold is wrapped in ``$…$`` unless it
  already starts with ``$`` (OlympiadBench gives ``$69$,$84$``); a plain integer gold is
  canonicalised first (AIME ``025`` → ``25``, AMC ``27.0`` → ``27``); sentence punctuation at
  the end of the boxed answer (``\\boxed{42.}``) is dropped, an ellipsis is kept.
- ``gsm8k`` — if there is a box, the WHOLE boxed answer must be one number (``$``, thousands
  commas, ``\\!`` and a trailing ``\\text{…}`` unit or ``%`` stripped; ``\\frac{a}{b}`` and ``a/b``
  read as fractions): ``\\boxed{\\frac{1}{4}}`` is 1/4, never 4, and ``\\boxed{2^{10}}`` is not a
  number at all (``mismatch``). Only when there is no box is the last number of the completion
  taken. Equality is exact (``Fraction``), so ``2,125`` = ``2125.00``.
- ``hendrycks`` — the last boxed answer vs the reference under the MATH ``is_equiv`` string
  normalisation (:mod:`micota.grading.hendrycks`): paper-comparable, misgrades correct answers
  written differently (``2\\sqrt2`` vs ``\\sqrt8``).

No box (or no number for gsm8k) → ``no_answer``; an empty box → ``empty_box``; both are wrong.
A grader that raises, or a reference that cannot be read (math-verify parses nothing from it),
gives reason ``error``: wrong, but counted as a grader error by ``micota eval`` (:data:`ERROR_REASONS`),
never silently folded into "wrong".
Graders run inside worker processes (:mod:`micota.grading.pool`), which enforce the hard
per-item timeout, so math-verify's own signal-based timeouts are switched off here
(``parsing_timeout=None``, ``timeout_seconds=None``): they only work on a main thread.

Add a mode with ``@register_grader("name")`` on a module-level function (workers import it by
name, so it must be importable).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

from micota.errors import UserError
from micota.grading.extract import last_boxed, last_number
from micota.grading.hendrycks import is_equiv

#: Why a completion was graded right or wrong.
REASONS = ("match", "mismatch", "no_answer", "empty_box", "parse_error", "error", "timeout", "crashed", "truncated", "too_complex")
#: Reasons that are a failure of the grader, not of the completion (counted per benchmark).
ERROR_REASONS = ("error", "timeout", "crashed")


@dataclass(frozen=True)
class GradeResult:
    correct: bool
    extracted: str | None
    reason: str  # one of REASONS


Grader = Callable[[str, str], GradeResult]
GRADERS: dict[str, Grader] = {}

def register_grader(name: str) -> Callable[[Grader], Grader]:
    """Decorator: ``@register_grader("mine")`` makes ``mode="mine"`` available everywhere."""

    def deco(fn: Grader) -> Grader:
        GRADERS[name] = fn
        return fn

    return deco


def get_grader(mode: str) -> Grader:
    try:
        return GRADERS[mode]
    except KeyError:
        raise UserError(f"unknown grading mode '{mode}' (choose from {', '.join(sorted(GRADERS))})") from None


def mode_for_source(source: str | None) -> str:
    """The grading mode a benchmark uses: ``BenchmarkSpec.grade_mode`` (``default`` if unregistered)."""
    from micota.data.benchmarks import grade_mode_for  # the one table; it imports nothing from grading

    return grade_mode_for(source)


def _verdict(ok: bool, extracted: str | None) -> GradeResult:
    return GradeResult(bool(ok), extracted, "match" if ok else "mismatch")


def _boxed_or_reason(completion: str) -> tuple[str | None, GradeResult | None]:
    box = last_boxed(completion)
    if box is None:
        return None, GradeResult(False, None, "no_answer")
    if not box:
        return None, GradeResult(False, "", "empty_box")
    return box, None


_TRAILING_PUNCT = re.compile(r"(?<![.\\])[.,;]\s*$")  # "42." but not an ellipsis "3, ..." or "\\,"
_PLAIN_INT = re.compile(r"\s*(-?)0*(\d+)(?:\.0*)?\s*")


def gold_latex(reference: str) -> str:
    """The reference as math-verify should read it: canonical integer, wrapped in ``$…$``."""
    m = _PLAIN_INT.fullmatch(reference)
    ref = f"{m.group(1)}{m.group(2)}" if m else reference.strip()
    return ref if ref.startswith("$") else f"${ref}$"


@register_grader("default")
def grade_default(completion: str, reference: str) -> GradeResult:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    box, early = _boxed_or_reason(completion)
    if early:
        return early
    cfg = [LatexExtractionConfig(), ExprExtractionConfig()]
    gold = parse(gold_latex(reference), cfg, parsing_timeout=None)
    pred = parse("\\boxed{" + _TRAILING_PUNCT.sub("", box) + "}", cfg, parsing_timeout=None)
    if not gold:
        return GradeResult(False, box, "error")  # the reference is unreadable: the grader's failure
    if not pred:
        return GradeResult(False, box, "parse_error")
    return _verdict(verify(gold, pred, timeout_seconds=None), box)


_FRAC = re.compile(r"(-?)\\[dt]?frac\{(-?\d+)\}\{(-?\d+)\}")
_UNIT_TAIL = re.compile(r"\s*(?:\\(?:text|mbox|mathrm)\{[^{}]*\}|\\?%)\s*$")


def _as_fraction(s: str | None) -> Fraction | None:
    try:
        return None if s is None else Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def box_number(box: str) -> Fraction | None:
    """The value of a boxed answer that is exactly one number (see the module doc), else None."""
    s = box.strip().replace("\\!", "").replace("{,}", ",").replace("\\$", "").replace("$", "")
    s = s.replace("\\,", "").replace("\\ ", " ").strip()
    while True:  # "18 \text{ dollars}", "25\%": drop trailing units
        t = _UNIT_TAIL.sub("", s)
        if t == s:
            break
        s = t.strip()
    s = s.rstrip(".").strip() if not s.endswith("..") else s
    m = _FRAC.fullmatch(s)
    if m:
        num, den = int(m.group(2)), int(m.group(3))
        return None if den == 0 else Fraction(-num if m.group(1) else num, den)
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    if re.fullmatch(r"-?\d+(?:\.\d+)?|-?\.\d+|-?\d+/\d+", s):
        return _as_fraction(s)
    return None


@register_grader("gsm8k")
def grade_gsm8k(completion: str, reference: str) -> GradeResult:
    box = last_boxed(completion)
    if box == "":
        return GradeResult(False, "", "empty_box")
    gold = _as_fraction(last_number(reference))
    if gold is None:
        return GradeResult(False, None, "error")  # the reference has no number: the grader's failure
    if box is not None:
        return _verdict(box_number(box) == gold, box)
    pred = last_number(completion)
    if pred is None:
        return GradeResult(False, None, "no_answer")
    return _verdict(_as_fraction(pred) == gold, pred)


@register_grader("hendrycks")
def grade_hendrycks(completion: str, reference: str) -> GradeResult:
    box, early = _boxed_or_reason(completion)
    if early:
        return early
    return _verdict(is_equiv(box, reference), box)
