"""The oracle teacher's three trace styles for a world problem, all ending in ``\\boxed{answer}``.

- ``short`` (System-1): one line per operation, ``23 + 15 = 38``, then the boxed answer.
- ``mid``: the work and nothing else — per operation, column arithmetic digit by digit with carries
  and borrows (long division for ``/``), then the step's result; no verification, no recap, no slips.
- ``long`` (R1-like, reflective): the same column work, plus after each operation a "Wait, let me
  check" verification by the inverse operation, and a final recap. With probability ``slip_rate`` per digit step it writes a wrong digit and
  notices it ("Hmm, wait. 3 + 5 is 8, not 9."); with probability ``slip_rate`` per operation it
  states a wrong result, the inverse check exposes it, and it redoes the step. Slips are drawn from
  ``random.Random(f"{seed}-{problem_id}")``, so different seeds slip in different places; every slip
  is corrected, so the boxed answer is always right.
"""

from __future__ import annotations

import random
from typing import Any

from micota.data.world.problems import SYMBOL, solve

STYLES = ("short", "mid", "long")
# The system prompt each style is pretrained behind (short is the default: no system message).
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


def short_trace(meta: dict[str, Any]) -> str:
    steps = solve(meta)
    return "\n".join([_eq(*s) for s in steps] + [f"The answer is \\boxed{{{steps[-1][3]}}}."])


def mid_trace(meta: dict[str, Any]) -> str:
    """The digit-by-digit work of :func:`long_trace` without its verification, recap and slips."""
    steps = solve(meta)
    w = _Writer(random.Random(0), 0.0)
    for n, (a, op, b, r) in enumerate(steps, start=1):
        w.lines.append(f"Step {n}: {a} {SYMBOL[op]} {b}.")
        _work(w, a, op, b)
        w.lines.append(f"So {_eq(a, op, b, r)}.")
    w.lines.append(f"The answer is \\boxed{{{steps[-1][3]}}}.")
    return "\n".join(w.lines)


def _digits(n: int) -> list[int]:
    """Digits of n, ones first."""
    return [int(c) for c in reversed(str(n))]


class _Writer:
    """Accumulates long-trace lines and draws slips."""

    def __init__(self, rng: random.Random, slip_rate: float):
        self.rng, self.slip_rate, self.lines, self.slips = rng, slip_rate, [], 0

    def slip(self) -> bool:
        hit = self.rng.random() < self.slip_rate
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


def long_trace(meta: dict[str, Any], *, seed: int | str = 0, slip_rate: float = 0.08, problem_id: str = "",
               return_slips: bool = False) -> Any:
    steps = solve(meta)
    w = _Writer(random.Random(f"{seed}-{problem_id}"), slip_rate)
    for n, (a, op, b, r) in enumerate(steps, start=1):
        w.lines.append(f"Step {n}: {a} {SYMBOL[op]} {b}.")
        _work(w, a, op, b)
        inv, x, y, back = _inverse(op, a, b, r)
        if w.slip():
            bad = r + w.rng.choice([-1, 1]) if r > 0 else r + 1
            _, bx, by, bback = _inverse(op, a, b, bad)
            got = _check_value(inv, bx, by)
            w.lines.append(f"So {_eq(a, op, b, bad)}.")
            w.lines.append(f"Wait, let me check: {bx} {SYMBOL[inv]} {by} = {got}, but it should be {a}. Something is off.")
            w.lines.append(f"Let me redo it. {_eq(a, op, b, r)}, not {bad}.")
        w.lines.append(f"So {_eq(a, op, b, r)}.")
        w.lines.append(f"Wait, let me check: {_eq(x, inv, y, back)}. Yes.")
    recap = ", ".join(_eq(a, op, b, r) for a, op, b, r in steps)
    if len(steps) > 1:
        w.lines.append(f"Let me double-check: {recap}.")
    w.lines.append(f"So the answer is \\boxed{{{steps[-1][3]}}}.")
    text = "\n".join(w.lines)
    return (text, w.slips) if return_slips else text


def _check_value(op: str, x: int, y: int) -> str:
    """The value an inverse check gives for a wrong result (division may be inexact: a fraction)."""
    if op == "div":
        q, r = divmod(x, y)
        return str(q) if r == 0 else f"{q} remainder {r}"
    return str({"add": x + y, "sub": x - y, "mul": x * y}[op])


def write_trace(style: str, meta: dict[str, Any], *, seed: int | str = 0, slip_rate: float = 0.08, problem_id: str = "") -> str:
    """One trace of ``style`` for a problem's meta (deterministic in seed and problem_id)."""
    if style == "short":
        return short_trace(meta)
    if style == "mid":
        return mid_trace(meta)
    if style == "long":
        return long_trace(meta, seed=seed, slip_rate=slip_rate, problem_id=problem_id)
    from micota.errors import UserError

    raise UserError(f"unknown trace style {style!r} (choose from {', '.join(STYLES)})")
