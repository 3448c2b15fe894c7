"""The miniature world's problem generator: determinism, disjoint splits, exact answers, knobs."""

from __future__ import annotations

import pytest

from micota.data.world.problems import Knobs, answer_of, generate_split, generate_splits, signature, solve
from micota.errors import UserError

KNOBS = {"train": Knobs(), "test": Knobs(), "hard": Knobs(3, 4, 3)}
SIZES = {"train": 400, "test": 100, "hard": 100}


def test_same_seed_same_problems_other_seed_other_problems():
    a = generate_splits(SIZES, KNOBS, seed=7)
    b = generate_splits(SIZES, KNOBS, seed=7)
    c = generate_splits(SIZES, KNOBS, seed=8)
    for split in SIZES:
        assert [p.model_dump() for p in a[split]] == [p.model_dump() for p in b[split]]
        assert [p.problem for p in a[split]] != [p.problem for p in c[split]]


def test_splits_are_disjoint_and_ids_unique():
    s = generate_splits(SIZES, KNOBS, seed=0)
    sigs = {k: {signature(p.meta) for p in v} for k, v in s.items()}
    texts = {k: {p.problem for p in v} for k, v in s.items()}
    for k in SIZES:
        assert len(sigs[k]) == len(texts[k]) == SIZES[k]  # no duplicates within a split either
    for x, y in [("train", "test"), ("train", "hard"), ("test", "hard")]:
        assert not sigs[x] & sigs[y]
        assert not texts[x] & texts[y]
    ids = [p.id for v in s.values() for p in v]
    assert len(set(ids)) == len(ids)
    assert {p.source for p in s["hard"]} == {"world-hard"}


def test_answers_exact_nonnegative_and_match_operations():
    s = generate_splits(SIZES, KNOBS, seed=1)
    ops_seen = set()
    for split, ps in s.items():
        for p in ps:
            steps = solve(p.meta)
            assert int(p.answer) == answer_of(p.meta) == steps[-1][3] >= 0
            for a, op, b, r in steps:
                ops_seen.add(op)
                assert r >= 0 and isinstance(r, int)
                if op == "div":
                    assert a % b == 0 and a // b == r
            assert str(p.meta["start"]) in p.problem
            assert p.problem.endswith("have now?")
    assert ops_seen == {"add", "sub", "mul", "div"}


def test_hard_split_is_harder():
    s = generate_splits(SIZES, KNOBS, seed=0)
    mean = lambda ps, f: sum(f(p) for p in ps) / len(ps)  # noqa: E731
    assert mean(s["hard"], lambda p: len(p.meta["ops"])) > mean(s["test"], lambda p: len(p.meta["ops"])) + 1
    assert mean(s["hard"], lambda p: len(p.answer)) > mean(s["test"], lambda p: len(p.answer))
    assert all(1 <= len(p.meta["ops"]) <= 2 for p in s["test"])
    assert all(3 <= len(p.meta["ops"]) <= 4 for p in s["hard"])


def test_bad_knobs_and_too_small_space():
    with pytest.raises(UserError, match="min_ops"):
        generate_split("train", 5, Knobs(min_ops=3, max_ops=2), seed=0)
    with pytest.raises(UserError, match="unknown operation 'pow'"):
        generate_split("train", 5, Knobs(ops=("pow",)), seed=0)
    with pytest.raises(UserError, match="cannot draw"):
        generate_split("train", 500, Knobs(min_ops=1, max_ops=1, digits=1, ops=("mul",), mul_max=2), seed=0)
