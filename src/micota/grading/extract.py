"""Answer extraction: the last ``\\boxed{…}``/``\\fbox{…}`` and the last number of a completion.

Both are plain linear scans (no regex backtracking, no sympy), so they are safe to run anywhere,
including the parent process, on any input.

- :func:`last_boxed` returns the content of the LAST box, brace-matched (nested braces, escaped
  ``\\{``/``\\}`` skipped), also for the brace-less form ``\\boxed 5``; ``""`` for an empty box and
  ``None`` when there is no box or the last box is never closed (a cut-off completion). An earlier
  box is never the answer.
- :func:`last_number` returns the last number in a text with thousands separators, ``$`` and
  LaTeX thin spaces removed (``"$2,125.50"`` → ``"2125.50"``).
"""

from __future__ import annotations

import re

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_NUMBER_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?|-?\.\d+")


def _match_braces(text: str, start: int) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``text[start]``, or None if it never closes."""
    depth = 0
    i = start
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and text[i + 1] in "{}\\":
            i += 2  # escaped brace (\{ \}) or a LaTeX line break (\\): not structural
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed``/``\\fbox`` in ``text`` (stripped); None if there is none."""
    matches = list(_BOX_RE.finditer(text))
    if not matches:
        return None
    pos = matches[-1].end()
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    if pos < len(text) and text[pos] == "{":
        end = _match_braces(text, pos)
        return None if end is None else text[pos + 1 : end].strip()
    # brace-less form: "\boxed 5$" -> "5" (up to the closing $ or the end of the line)
    rest = re.split(r"[$\n]", text[pos:], maxsplit=1)[0]
    return rest.strip()


def _clean_number_text(text: str) -> str:
    text = text.replace("\\!", "").replace("{,}", ",").replace("\\$", "").replace("$", "")
    return text


def last_number(text: str) -> str | None:
    """The last number in ``text`` as a plain decimal string, or None."""
    found = _NUMBER_RE.findall(_clean_number_text(text))
    if not found:
        return None
    return found[-1].replace(",", "")


# ----------------------------------------------------------------------------- pre-screen
MAX_COMPLETION_CHARS = 1_000_000  # far beyond any generated completion (32k tokens ≈ 130k chars)
MAX_DIGITS = 100_000  # an answer whose value has more digits is not a plausible answer
MAX_NESTING = 200  # braces/parentheses

_TOWER_RE = re.compile(r"(?<!\d)(\d{1,30})\s*\^\s*[{(]?\s*(\d{1,30})\s*\^\s*[{(]?\s*(\d{1,30})")
_POW_RE = re.compile(r"(?<![\d.])(\d{1,30})\s*(?:\^|\*\*)\s*[{(]?\s*(\d{1,30})(?![\d.])")
_FACT_RE = re.compile(r"(?<!\d)(\d{1,30})\s*!")
_EXPR_FACT_RE = re.compile(r"[)}]\s*!")
_GROUPING_RE = re.compile(r"\\left|\\right|[\s{}()]")
_LONG_DIGITS_RE = re.compile(r"\d{%d}" % (MAX_DIGITS + 1))


def _digits_of_power(a: int, b: int) -> float:
    """log10(a**b) without computing it."""
    import math

    return 0.0 if a <= 1 else b * math.log10(a)


def too_costly(completion: str) -> str | None:
    """Why grading ``completion`` would be pathological (a number with more than
    :data:`MAX_DIGITS` digits, an exponent tower, a huge factorial, absurd nesting or length), or None.

    A cheap linear pre-screen on the final answer (the last box, else the text's tail) run in the
    parent before an item goes to a worker, so such answers cost microseconds instead of a worker's
    full timeout (they are graded wrong, reason ``too_complex``). Ordinary answers never trip it:
    ``2^{10}``, ``10!``, ``2^{2^{3}}`` pass.
    """
    import math

    if len(completion) > MAX_COMPLETION_CHARS:
        return f"completion longer than {MAX_COMPLETION_CHARS:,} characters"
    ans = last_boxed(completion)
    text = ans if ans is not None else completion[-2000:]
    nest = completion if completion.count("{") + completion.count("(") > MAX_NESTING else text
    depth = worst = 0
    for c in nest:
        if c in "{(":
            depth += 1
            worst = max(worst, depth)
        elif c in "})":
            depth -= 1
    if worst > MAX_NESTING:
        return f"brackets nested {worst} deep"
    if _LONG_DIGITS_RE.search(text):
        return f"a literal with more than {MAX_DIGITS:,} digits"
    flat = _GROUPING_RE.sub("", text)  # 9^{(9^{9})} -> 9^9^9
    for m in _TOWER_RE.finditer(flat):  # a^(b^c): log10 of the value is b^c·log10(a)
        b, c = int(m.group(2)), int(m.group(3))
        if int(m.group(1)) > 1 and b > 1 and c * math.log10(b) > math.log10(MAX_DIGITS):
            return "an exponent tower"
    for m in _POW_RE.finditer(flat):
        if _digits_of_power(int(m.group(1)), int(m.group(2))) > MAX_DIGITS:
            return f"a power with more than {MAX_DIGITS:,} digits"
    for m in _FACT_RE.finditer(text):
        if int(m.group(1)) > 20_000:  # 20000! has 77,338 digits
            return "a huge factorial"
    for m in _EXPR_FACT_RE.finditer(text):
        if "^" in text[max(0, m.start() - 60):m.start()]:
            return "a factorial of a power"
    return None
