"""Small statistics for evaluation: bootstrap CIs, unbiased pass@k, paired comparison.

- :func:`bootstrap_ci`: percentile bootstrap of the mean — resample the per-problem values with
  replacement ``n_boot`` times, take the ``alpha/2`` and ``1-alpha/2`` quantiles of the means.
- :func:`pass_at_k`: ``1 - C(n-c, k) / C(n, k)`` (Chen et al. 2021), the probability that at least
  one of ``k`` samples drawn without replacement from ``n`` (``c`` correct) is correct.
- :func:`paired_bootstrap_diff`: mean of ``a - b`` over the same problems, with a bootstrap CI that
  resamples problems (keeping pairs together) and the one-sided share of resamples with diff <= 0.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def bootstrap_ci(values: Sequence[float], *, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """(lo, hi) percentile bootstrap CI of the mean of ``values``; (nan, nan) when empty."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct (requires ``k <= n``)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    # 1 - prod_{i=n-c+1}^{n} (1 - k/i): numerically stable form of 1 - C(n-c,k)/C(n,k)
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def paired_bootstrap_diff(a: Sequence[float], b: Sequence[float], *, n_boot: int = 2000, seed: int = 0,
                          alpha: float = 0.05) -> dict[str, float]:
    """Paired comparison of per-problem scores ``a`` and ``b`` (same problems, same order).

    Returns ``diff`` (mean a - b), ``lo``/``hi`` (bootstrap CI) and ``p_le_0`` (share of resampled
    mean differences <= 0: a one-sided bootstrap p-value for "a is better than b")."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired comparison needs equal lengths ({x.size} vs {y.size})")
    d = x - y
    if d.size == 0:
        return {"diff": float("nan"), "lo": float("nan"), "hi": float("nan"), "p_le_0": float("nan")}
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return {"diff": float(d.mean()), "lo": float(lo), "hi": float(hi), "p_le_0": float((means <= 0).mean())}
