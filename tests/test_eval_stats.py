"""scoring.stats: pass@k against brute-force enumeration, bootstrap CIs, paired comparison."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from micota.scoring.stats import bootstrap_ci, paired_bootstrap_diff, pass_at_k


@pytest.mark.parametrize("n,c,k", [(5, 0, 1), (5, 2, 1), (5, 2, 3), (6, 3, 6), (7, 1, 2), (4, 4, 2)])
def test_pass_at_k_equals_share_of_k_subsets_with_a_correct_sample(n, c, k):
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    brute = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(brute)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_bootstrap_ci_brackets_the_mean_and_shrinks_with_data():
    rng = np.random.default_rng(1)
    small = rng.integers(0, 2, 20).tolist()
    big = rng.integers(0, 2, 2000).tolist()
    lo, hi = bootstrap_ci(small, seed=3)
    assert lo <= np.mean(small) <= hi and 0 <= lo < hi <= 1
    assert bootstrap_ci(small, seed=3) == (lo, hi)  # seeded
    blo, bhi = bootstrap_ci(big)
    assert bhi - blo < (hi - lo) / 4  # ~1/sqrt(100) of the width
    assert bootstrap_ci([1, 1, 1]) == (1.0, 1.0)


def test_paired_diff_detects_a_consistent_gain_and_not_noise():
    rng = np.random.default_rng(0)
    b = rng.integers(0, 2, 200).astype(float)
    a = b.copy()
    a[rng.choice(np.flatnonzero(b == 0), 30, replace=False)] = 1  # a fixes 30 problems
    r = paired_bootstrap_diff(a, b)
    assert r["diff"] == pytest.approx(30 / 200) and r["lo"] > 0 and r["p_le_0"] < 0.01
    same = paired_bootstrap_diff(b, b)
    assert same["diff"] == 0 and same["p_le_0"] == 1.0
    with pytest.raises(ValueError):
        paired_bootstrap_diff([1, 0], [1])


# ---- issue 11/13: Wilson intervals, maj@k, the macro paired bootstrap ----------------------------
from micota.scoring.stats import majority_vote, paired_bootstrap_macro, wilson_ci  # noqa: E402


def test_wilson_matches_hand_computed_values():
    # 0/10: centre z²/2n / (1 + z²/n), half-width z·sqrt(z²/4n²) / (1 + z²/n); z = 1.96
    z = 1.959963984540054
    hi = (z * z / 20 + z * np.sqrt(z * z / 400)) / (1 + z * z / 10)
    assert wilson_ci(0, 10) == pytest.approx((0.0, hi)) and hi == pytest.approx(0.2775, abs=1e-4)
    assert wilson_ci(10, 10) == pytest.approx((1 - hi, 1.0))
    assert wilson_ci(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)  # textbook value
    assert np.isnan(wilson_ci(0, 0)[0])
    with pytest.raises(ValueError):
        wilson_ci(11, 10)


@pytest.mark.parametrize("answers,expected", [
    (["1", "2", "2", "1"], 0),      # a 2-2 tie goes to the group seen first
    (["2", "1", "1", "2"], 0),
    (["3", "1", "2", "2"], 2),      # the majority's first member
    ([None, None, "7"], 2),         # no answer never votes
    ([None, None], None),
    (["0.5", "1/2", "3", "3"], 0),  # with an equivalence, 0.5 and 1/2 form one group: 2-2, first wins
])
def test_majority_vote_ties_and_equivalence(answers, expected):
    same = (lambda a, b: {a, b} <= {"0.5", "1/2"} or a == b)
    assert majority_vote(answers, same) == expected


def test_paired_bootstrap_macro_weighs_benchmarks_equally():
    # GSM8K-sized benchmark: +1 on every problem; AIME-sized: -1 on every problem.
    a = {"gsm8k": [1.0] * 1000, "aime": [0.0] * 30}
    b = {"gsm8k": [0.0] * 1000, "aime": [1.0] * 30}
    r = paired_bootstrap_macro(a, b)
    pooled = paired_bootstrap_diff(a["gsm8k"] + a["aime"], b["gsm8k"] + b["aime"])
    assert r["diff"] == pytest.approx(0.0) and (r["lo"], r["hi"]) == pytest.approx((0.0, 0.0))
    assert pooled["diff"] == pytest.approx((1000 - 30) / 1030)  # pooling lets GSM8K dominate
    assert (r["n_benchmarks"], r["n_problems"]) == (2, 1030)


def test_paired_bootstrap_macro_resamples_within_benchmarks():
    rng = np.random.default_rng(1)
    a = {"x": rng.random(40).tolist(), "y": rng.random(10).tolist()}
    b = {"x": rng.random(40).tolist(), "y": rng.random(10).tolist()}
    r = paired_bootstrap_macro(a, b, n_boot=4000, seed=3)
    dx, dy = np.subtract(a["x"], b["x"]), np.subtract(a["y"], b["y"])
    assert r["diff"] == pytest.approx((dx.mean() + dy.mean()) / 2)
    # second implementation: the same resampling written out with the same generator stream
    g = np.random.default_rng(3)
    boot = (dx[g.integers(0, 40, size=(4000, 40))].mean(1) + dy[g.integers(0, 10, size=(4000, 10))].mean(1)) / 2
    assert (r["lo"], r["hi"]) == pytest.approx(tuple(np.quantile(boot, [0.025, 0.975])))
    assert r["p_le_0"] == pytest.approx((boot <= 0).mean())
    with pytest.raises(ValueError, match="same benchmarks"):
        paired_bootstrap_macro({"x": [1.0]}, {"y": [1.0]})
    with pytest.raises(ValueError, match="equal lengths"):
        paired_bootstrap_macro({"x": [1.0]}, {"x": [1.0, 0.0]})
