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
