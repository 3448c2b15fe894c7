"""Seeded arithmetic word problems with exact non-negative integer answers.

A problem is a start value and a list of operations applied to it in order, told as a short story
("Ava has 23 marbles. She buys 15 more marbles. She splits the marbles into 2 equal piles and keeps
one pile. How many marbles does Ava have now?"). The operation list is stored in ``Problem.meta`` so
the oracle solves it without parsing English:

    meta = {"start": 23, "ops": [["add", 15], ["div", 2]], "n_ops": 2, "digits": 2, ...}

Operations: ``add b``, ``sub b`` (only when b <= value), ``mul k`` (k in 2..mul_max, result capped at
``10**(digits+1) - 1``) and ``div k`` (only when k divides the value exactly). The start value has
``digits`` digits, add/sub operands up to ``operand_digits``. Every intermediate value and the
answer are non-negative integers.

Splits: ``train`` and ``test`` share one :class:`Knobs`; ``hard`` uses more operations and more
digits. Each split draws from its own ``random.Random(f"{seed}-{split}")`` stream; a problem whose
(start, ops) already appeared in an earlier split is redrawn, so splits are disjoint.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from micota.errors import UserError
from micota.records import Problem

OPS = ("add", "sub", "mul", "div")
SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/"}

NAMES = [("Ava", "She"), ("Ben", "He"), ("Mia", "She"), ("Leo", "He"), ("Zoe", "She"), ("Sam", "He"),
         ("Ivy", "She"), ("Max", "He"), ("Lily", "She"), ("Omar", "He"), ("Nora", "She"), ("Eli", "He")]
OBJECTS = ["apples", "marbles", "coins", "stickers", "pencils", "books", "shells", "cards", "cookies", "stamps",
           "beads", "toys"]

START = ["{N} has {a} {o}.", "{N} starts with {a} {o}.", "{N} owns {a} {o}."]
TELL = {
    "add": ["{P} buys {b} more {o}.", "{P} finds {b} more {o}.", "{F} gives {N} {b} more {o}."],
    "sub": ["{P} gives {b} {o} to {F}.", "{P} loses {b} {o}.", "{P} sells {b} {o}."],
    "mul": ["Now {p} has {b} times as many {o} as before."],
    "div": ["{P} splits the {o} into {b} equal piles and keeps one pile."],
}
TELL_MUL2 = "{P} doubles the {o}."
TELL_MUL3 = "{P} triples the {o}."
QUESTION = "How many {o} does {N} have now?"


@dataclass(frozen=True)
class Knobs:
    """Difficulty: ``min_ops..max_ops`` operations, a ``digits``-digit start value, add/sub operands
    of up to ``operand_digits`` digits, multipliers/divisors in ``2..mul_max``."""

    min_ops: int = 1
    max_ops: int = 2
    digits: int = 2
    mul_max: int = 5
    ops: tuple[str, ...] = OPS
    operand_digits: int = 0  # 0 = same as digits

    def check(self) -> None:
        if not 1 <= self.min_ops <= self.max_ops:
            raise UserError(f"operations: need 1 <= min_ops <= max_ops, got {self.min_ops}..{self.max_ops}")
        if not 1 <= self.digits <= 6:
            raise UserError(f"digits must be in 1..6, got {self.digits}")
        if not 0 <= self.operand_digits <= self.digits:
            raise UserError(f"operand_digits must be in 1..digits ({self.digits}), got {self.operand_digits}")
        if not 2 <= self.mul_max <= 9:
            raise UserError(f"mul_max must be in 2..9, got {self.mul_max}")
        bad = [o for o in self.ops if o not in OPS]
        if bad or not self.ops:
            raise UserError(f"unknown operation {bad[0] if bad else '(none)'!r} (choose from {', '.join(OPS)})")


def apply_op(value: int, op: str, b: int) -> int:
    """The exact integer result of one operation (raises on a non-exact or negative step)."""
    if op == "add":
        return value + b
    if op == "sub":
        if b > value:
            raise ValueError(f"{value} - {b} is negative")
        return value - b
    if op == "mul":
        return value * b
    if op == "div":
        if b == 0 or value % b:
            raise ValueError(f"{value} / {b} is not exact")
        return value // b
    raise ValueError(f"unknown operation {op!r}")


def solve(meta: dict[str, Any]) -> list[tuple[int, str, int, int]]:
    """Steps ``(value, op, operand, result)`` of a problem's meta; the last result is the answer."""
    value = int(meta["start"])
    steps = []
    for op, b in meta["ops"]:
        r = apply_op(value, op, int(b))
        steps.append((value, op, int(b), r))
        value = r
    return steps


def answer_of(meta: dict[str, Any]) -> int:
    steps = solve(meta)
    return steps[-1][3] if steps else int(meta["start"])


def _draw_op(rng: random.Random, value: int, k: Knobs) -> tuple[str, int] | None:
    cap = 10 ** (k.digits + 1) - 1
    hi = 10 ** (k.operand_digits or k.digits) - 1
    op = rng.choice(k.ops)
    if op == "add":
        b = rng.randint(1, hi)
        return (op, b) if value + b <= cap else None
    if op == "sub":
        return (op, rng.randint(1, min(hi, value))) if value >= 1 else None
    if op == "mul":
        b = rng.randint(2, k.mul_max)
        return (op, b) if 0 < value * b <= cap else None
    divisors = [d for d in range(2, k.mul_max + 1) if value and value % d == 0]
    return (op, rng.choice(divisors)) if divisors else None


def draw_problem(rng: random.Random, k: Knobs) -> dict[str, Any]:
    """One problem's meta: the start value, the operation list and the story's cast."""
    n_ops = rng.randint(k.min_ops, k.max_ops)
    start = rng.randint(10 ** (k.digits - 1) if k.digits > 1 else 1, 10 ** k.digits - 1)
    value, ops = start, []
    while len(ops) < n_ops:
        step = None
        for _ in range(50):
            step = _draw_op(rng, value, k)
            if step:
                break
        if step is None:  # nothing fits (e.g. only div allowed and value is prime): add instead
            step = ("add", 1)
        ops.append(list(step))
        value = apply_op(value, *step)
    (name, pron), friend = rng.choice(NAMES), rng.choice(NAMES)[0]
    while friend == name:
        friend = rng.choice(NAMES)[0]
    return {"start": start, "ops": ops, "n_ops": n_ops, "digits": k.digits, "name": name, "pronoun": pron,
            "friend": friend, "object": rng.choice(OBJECTS), "templates": [rng.randrange(3) for _ in range(n_ops + 1)]}


def tell(meta: dict[str, Any]) -> str:
    """The story of a problem, one sentence per operation, ending with the question."""
    f = {"N": meta["name"], "P": meta["pronoun"], "p": meta["pronoun"].lower(), "F": meta["friend"], "o": meta["object"]}
    t = meta["templates"]
    parts = [START[t[0] % len(START)].format(a=meta["start"], **f)]
    for i, (op, b) in enumerate(meta["ops"]):
        if op == "mul" and b in (2, 3) and t[i + 1] != 2:
            tpl = TELL_MUL2 if b == 2 else TELL_MUL3
        else:
            choices = TELL[op]
            tpl = choices[t[i + 1] % len(choices)]
        parts.append(tpl.format(b=b, **f))
    parts.append(QUESTION.format(**f))
    return " ".join(parts)


def signature(meta: dict[str, Any]) -> tuple:
    return (meta["start"], tuple(tuple(o) for o in meta["ops"]))


def generate_split(split: str, n: int, knobs: Knobs, *, seed: int, exclude: set | None = None) -> list[Problem]:
    """``n`` problems of one split, deterministic in (seed, split, knobs); none whose (start, ops)
    is in ``exclude`` (which is updated with the new ones)."""
    knobs.check()
    seen = exclude if exclude is not None else set()
    rng = random.Random(f"{seed}-{split}")
    out: list[Problem] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 50 * n + 1000:
            raise UserError(f"split {split!r}: cannot draw {n} distinct problems with these knobs (space too small)")
        meta = draw_problem(rng, knobs)
        sig = signature(meta)
        if sig in seen:
            continue
        seen.add(sig)
        meta["knobs"] = {"min_ops": knobs.min_ops, "max_ops": knobs.max_ops, "digits": knobs.digits,
                         "operand_digits": knobs.operand_digits or knobs.digits, "mul_max": knobs.mul_max}
        out.append(Problem(id=f"world-{split}-{len(out):05d}", problem=tell(meta), answer=str(answer_of(meta)),
                           source=f"world-{split}", meta=meta))
    return out


def generate_splits(sizes: dict[str, int], knobs: dict[str, Knobs], *, seed: int,
                    exclude: set | None = None) -> dict[str, list[Problem]]:
    """All splits in order (train first), pairwise disjoint in (start, ops) and from ``exclude``."""
    seen: set = exclude if exclude is not None else set()
    return {split: generate_split(split, n, knobs[split], seed=seed, exclude=seen) for split, n in sizes.items()}
