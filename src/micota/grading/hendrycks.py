"""The MATH benchmark's string-normalisation equivalence (``is_equiv``), re-implemented.

Behaviour follows ``modeling/math_equivalence.py`` of the Hendrycks MATH repository
(github.com/hendrycks/math, functions ``_strip_string`` / ``is_equiv``), which MiCoTA's evaluation
used; this is an independent implementation of the same steps, in the same order:

1. drop line breaks, ``\\!``; ``\\\\`` → ``\\``; ``tfrac``/``dfrac`` → ``frac``; drop ``\\left``,
   ``\\right``, ``^{\\circ}``, ``^\\circ`` and ``\\$``;
2. units: if ``\\text{ `` (with a space) occurs, keep only what precedes it (exactly one
   occurrence is expected; more is an error, see below);
3. drop ``\\%`` (only the escaped form: upstream writes ``"\\%"`` twice, a bare ``%`` stays); `` .`` → `` 0.``, ``{.`` → ``{0.``, a leading ``.`` gets a ``0``;
4. ``k = 5`` → ``5`` when the text has one ``=`` and the left side is at most 2 characters;
5. ``\\sqrt3`` → ``\\sqrt{3}``; remove all spaces; ``\\frac12`` → ``\\frac{1}{2}``,
   ``\\frac1{72}`` → ``\\frac{1}{72}``; exactly ``0.5`` → ``\\frac{1}{2}``;
   ``a/b`` of two plain integers → ``\\frac{a}{b}``.

Two answers are equivalent iff their normalised strings are equal. When normalisation fails
(several ``\\text{ `` units, or a ``\\sqrt`` at the very end), the raw strings are compared
instead, as the original does; so does a ``\\frac`` at the very end (the original indexes
``substr[0]`` of an empty piece and raises). A ``\\frac`` followed by exactly one character leaves
the string as it was.

``tests/test_grading_hendrycks.py`` runs this against a transcription of the upstream functions on
every grading test case and on perturbed forms of every benchmark reference: they must agree on
every pair.
"""

from __future__ import annotations


class _Unnormalisable(Exception):
    pass


def _fix_fracs(s: str) -> str:
    head, *tails = s.split("\\frac")
    out = [head]
    for tail in tails:
        out.append("\\frac")
        if not tail:
            raise _Unnormalisable(s)  # upstream: IndexError in substr[0] -> raw comparison
        if tail.startswith("{"):
            out.append(tail)
            continue
        if len(tail) < 2:
            return s  # the original gives up and keeps the string as it was
        a, b, rest = tail[0], tail[1], tail[2:]
        out.append("{" + a + "}" + (b if b == "{" else "{" + b + "}") + rest)
    return "".join(out)


def _fix_a_slash_b(s: str) -> str:
    parts = s.split("/")
    if len(parts) != 2:
        return s
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:
        return s
    if s != f"{a}/{b}":  # e.g. "01/2" or " 1/2": only canonical integers are rewritten
        return s
    return "\\frac{" + str(a) + "}{" + str(b) + "}"


def _remove_right_units(s: str) -> str:
    if "\\text{ " not in s:
        return s
    parts = s.split("\\text{ ")
    if len(parts) != 2:
        raise _Unnormalisable(s)
    return parts[0]


def _fix_sqrt(s: str) -> str:
    head, *tails = s.split("\\sqrt")
    out = [head]
    for tail in tails:
        if not tail:
            raise _Unnormalisable(s)  # "\sqrt" at the very end (the original indexes tail[0])
        out.append("\\sqrt" + (tail if tail[0] == "{" else "{" + tail[0] + "}" + tail[1:]))
    return "".join(out)


def strip_string(s: str) -> str:
    """The MATH normal form of an answer string; raises ``ValueError`` when it cannot be formed."""
    try:
        return _strip(s)
    except _Unnormalisable as e:
        raise ValueError(f"cannot normalise {s!r}") from e


def _strip(s: str) -> str:
    for old, new in (("\n", ""), ("\\!", ""), ("\\\\", "\\"), ("tfrac", "frac"), ("dfrac", "frac"),
                     ("\\left", ""), ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\$", "")):
        s = s.replace(old, new)
    s = _remove_right_units(s)
    s = s.replace("\\%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        s = sides[1]
    s = _fix_sqrt(s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _fix_a_slash_b(s)


def is_equiv(a: str | None, b: str | None) -> bool:
    """MATH ``is_equiv``: equal after :func:`strip_string` (raw equality if that fails)."""
    if a is None or b is None:
        return a is None and b is None
    try:
        return _strip(a) == _strip(b)
    except _Unnormalisable:
        return a == b
