"""The oracle teacher's traces for a world problem, all ending in ``The answer is \\boxed{answer}.``

Verbosity is a dial, not a switch: :func:`care_trace` writes a problem at a *care* level ``c`` and a
*reflection* level ``r`` in [0, 1] (``r = c`` unless given), deciding every operation on its own:

    p_work(c)  = min(1, 2c)        the operation's column work is written out (else one line)
    p_check(r) = max(0, 2r - 1)    the result is verified by the inverse operation ("Wait, let me check")
    slip(r)    = slip_rate * p_check(r)   per digit step and per check: a wrong value, noticed and fixed
    recap      with p_check(r), for multi-step problems ("Let me double-check: ...")

An operation without work is one line, ``Step 1: 424 - 91 = 333.``; with work it is ``Step 1: 424 - 91.``,
the column arithmetic digit by digit (carries, borrows, long division), ``So 424 - 91 = 333.``. A check
follows either form. The three styles the method talks about are points on the diagonal r = c:

- ``short`` (c = 0, System-1): one line per operation, then the boxed answer.
- ``mid`` (c = 0.5): the work and nothing else — column work for every operation, no checks, no slips.
- ``long`` (c = 1, R1-like, reflective): ``mid``'s work, a check after every step, a recap, and slips
  with probability ``slip_rate``: a wrong digit noticed at once ("Hmm, wait. 3 + 5 is 8, not 9."), or a
  wrong step result that the check exposes and the trace redoes. Every slip is corrected; the box is
  always right.

Off the diagonal (only the bases' corpus goes there, ``build.pretrain_corpus``) reflection comes without
work — a one-line step followed by its check, a recap of one-line steps — as human text verifies and
restates results at every level of working. Decisions and slips are drawn from
``random.Random(f"{seed}-{problem_id}")`` (a decision whose probability is 0 or 1 draws nothing, so the
three styles are deterministic apart from long's slips). See docs/design/world.md.
"""

from __future__ import annotations

import random
from typing import Any

from micota.data.world.problems import SYMBOL, solve

# The bases' corpus's second context (``build.pretrain_corpus``): behind this system message traces are written at
# care and reflection drawn uniformly, so a cued trace may be terse, worked, checked or recapped, step by step.
CUE_SYSTEM = "Take your time: show your work and check it as you see fit."

# The named styles: points on the care dial.
STYLE_CARE = {"short": 0.0, "mid": 0.5, "long": 1.0}
STYLES = tuple(STYLE_CARE)
# Each style's system prompt, for the optional prompt-selected shares of the corpus (pretrain_mid / pretrain_long)
# and the pretrain stage's per-style accuracy check; short is the default: no system message.
STYLE_SYSTEM: dict[str, str | None] = {
    "short": None,
    "mid": "Work it out digit by digit.",
    "long": "Think it through slowly: work digit by digit, check every step, then recap.",
}

PLACES = ["Ones", "Tens", "Hundreds", "Thousands", "Ten-thousands", "Hundred-thousands", "Millions", "Ten-millions"]


def _eq(a: int, op: str, b: int, r: int) -> str:
    return f"{a} {SYMBOL[op]} {b} = {r}"


def _inverse(op: str, a: int, b: int, r: int) -> tuple[str, int, int, int]:
    """The check of ``a op b = r``: r - b = a, r + b = a, r / b = a, r * b = a."""
    inv = {"add": "sub", "sub": "add", "mul": "div", "div": "mul"}[op]
    return inv, r, b, a


def _digits(n: int) -> list[int]:
    """Digits of n, ones first."""
    return [int(c) for c in reversed(str(n))]


class _Writer:
    """Accumulates long-trace lines and draws slips."""

    def __init__(self, rng: random.Random, slip_rate: float):
        self.rng, self.slip_rate, self.lines, self.slips = rng, slip_rate, [], 0

    def draw(self, p: float) -> bool:
        """True with probability p; p = 0 or 1 consumes no random number."""
        return p >= 1 or (p > 0 and self.rng.random() < p)

    def slip(self) -> bool:
        hit = self.draw(self.slip_rate)
        self.slips += hit
        return hit

    def wrong(self, right: int, lo: int = 0, hi: int = 9) -> int:
        """A value next to ``right`` (never equal to it), within ``lo..hi`` when possible."""
        w = right + self.rng.choice([-1, 1])
        return w if lo <= w <= hi and w != right else (right + 1 if right + 1 <= hi else right - 1)

    def digit_line(self, place: str, expr: str, value: int, tail: str, pre: str = "") -> None:
        """``Ones: 3 + 5 = 8, write 8.`` — or a slip on ``value`` noticed at once."""
        if self.slip():
            w = self.wrong(value, 0, 99)
            self.lines.append(f"{place}: {pre}{expr} = {w}.")
            self.lines.append(f"Hmm, wait. {expr} is {value}, not {w}.")
        self.lines.append(f"{place}: {pre}{expr} = {value}{tail}")


def _column_add(w: _Writer, a: int, b: int) -> None:
    da, db = _digits(a), _digits(b)
    carry = 0
    for i in range(max(len(da), len(db))):
        x, y = (da[i] if i < len(da) else 0), (db[i] if i < len(db) else 0)
        s = x + y + carry
        expr = f"{x} + {y}" + (f" + {carry}" if carry else "")
        tail = f", write {s % 10}, carry {s // 10}." if s >= 10 else "."
        w.digit_line(PLACES[i], expr, s, tail)
        carry = s // 10
    if carry:
        w.lines.append(f"{PLACES[max(len(da), len(db))]}: write the carry {carry}.")


def _column_sub(w: _Writer, a: int, b: int) -> None:
    da, db = _digits(a), _digits(b)
    borrow = 0
    for i in range(len(da)):
        x, y = da[i], (db[i] if i < len(db) else 0)
        if i >= len(db) and not borrow and i > 0:
            w.lines.append(f"{PLACES[i]}: {x} stays.")
            continue
        top = x - borrow
        pre = f"{x} - {borrow} = {top}, then " if borrow else ""
        if top < y:
            pre += f"{top} is less than {y}, borrow 1: "
            w.digit_line(PLACES[i], f"{top + 10} - {y}", top + 10 - y, ".", pre)
            borrow = 1
        else:
            w.digit_line(PLACES[i], f"{top} - {y}", top - y, ".", pre)
            borrow = 0


def _column_mul(w: _Writer, a: int, k: int) -> None:
    da = _digits(a)
    carry = 0
    for i, x in enumerate(da):
        p = x * k + carry
        expr = f"{x} * {k}" + (f" + {carry}" if carry else "")
        tail = f", write {p % 10}, carry {p // 10}." if p >= 10 else "."
        w.digit_line(PLACES[i], expr, p, tail)
        carry = p // 10
    if carry:
        w.lines.append(f"{PLACES[len(da)]}: write the carry {carry}.")


def _long_div(w: _Writer, a: int, k: int) -> None:
    rem = 0
    for j, c in enumerate(str(a)):
        cur = rem * 10 + int(c)
        q, rem = divmod(cur, k)
        head = f"Take {c}" if j == 0 else f"Bring down {c} to make {cur}"
        w.digit_line(head, f"{cur} / {k}", q, f" remainder {rem}.")


def _work(w: _Writer, a: int, op: str, b: int) -> None:
    {"add": _column_add, "sub": _column_sub, "mul": _column_mul, "div": _long_div}[op](w, a, b)


def care_trace(meta: dict[str, Any], care: float, *, reflect: float | None = None, seed: int | str = 0,
               slip_rate: float = 0.08, problem_id: str = "", return_slips: bool = False) -> Any:
    """The trace of ``meta`` at care ``care`` and reflection ``reflect`` (default: ``care``; formulas in
    the module docstring)."""
    steps = solve(meta)
    p_work = min(1.0, 2 * care)
    p_check = max(0.0, 2 * (care if reflect is None else reflect) - 1)
    w = _Writer(random.Random(f"{seed}-{problem_id}"), slip_rate * p_check)
    for n, (a, op, b, r) in enumerate(steps, start=1):
        worked = w.draw(p_work)
        if worked:
            w.lines.append(f"Step {n}: {a} {SYMBOL[op]} {b}.")
            _work(w, a, op, b)
        if not w.draw(p_check):
            w.lines.append(f"So {_eq(a, op, b, r)}." if worked else f"Step {n}: {_eq(a, op, b, r)}.")
            continue
        first = (lambda v: f"So {_eq(a, op, b, v)}.") if worked else (lambda v: f"Step {n}: {_eq(a, op, b, v)}.")
        inv, x, y, back = _inverse(op, a, b, r)
        if w.slip():
            bad = r + w.rng.choice([-1, 1]) if r > 0 else r + 1
            _, bx, by, bback = _inverse(op, a, b, bad)
            got = _check_value(inv, bx, by)
            w.lines.append(first(bad))
            w.lines.append(f"Wait, let me check: {bx} {SYMBOL[inv]} {by} = {got}, but it should be {a}. Something is off.")
            w.lines.append(f"Let me redo it. {_eq(a, op, b, r)}, not {bad}.")
            w.lines.append(f"So {_eq(a, op, b, r)}.")
        else:
            w.lines.append(first(r))
        w.lines.append(f"Wait, let me check: {_eq(x, inv, y, back)}. Yes.")
    if len(steps) > 1 and w.draw(p_check):
        w.lines.append(f"Let me double-check: {', '.join(_eq(a, op, b, r) for a, op, b, r in steps)}.")
    w.lines.append(f"The answer is \\boxed{{{steps[-1][3]}}}.")
    text = "\n".join(w.lines)
    return (text, w.slips) if return_slips else text


def long_trace(meta: dict[str, Any], *, seed: int | str = 0, slip_rate: float = 0.08, problem_id: str = "",
               return_slips: bool = False) -> Any:
    return care_trace(meta, 1.0, seed=seed, slip_rate=slip_rate, problem_id=problem_id, return_slips=return_slips)


def _check_value(op: str, x: int, y: int) -> str:
    """The value an inverse check gives for a wrong result (division may be inexact: a fraction)."""
    if op == "div":
        q, r = divmod(x, y)
        return str(q) if r == 0 else f"{q} remainder {r}"
    return str({"add": x + y, "sub": x - y, "mul": x * y}[op])


def write_trace(style: str, meta: dict[str, Any], *, seed: int | str = 0, slip_rate: float = 0.08, problem_id: str = "") -> str:
    """One trace of ``style`` for a problem's meta (deterministic in seed and problem_id)."""
    if style not in STYLE_CARE:
        from micota.errors import UserError

        raise UserError(f"unknown trace style {style!r} (choose from {', '.join(STYLES)})")
    return care_trace(meta, STYLE_CARE[style], seed=seed, slip_rate=slip_rate, problem_id=problem_id)
