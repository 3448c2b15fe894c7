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
