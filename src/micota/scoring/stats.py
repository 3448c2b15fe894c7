"""Small statistics for evaluation: bootstrap CIs, unbiased pass@k, paired comparison.

- :func:`bootstrap_ci`: percentile bootstrap of the mean — resample the per-problem values with
  replacement ``n_boot`` times, take the ``alpha/2`` and ``1-alpha/2`` quantiles of the means.
- :func:`pass_at_k`: ``1 - C(n-c, k) / C(n, k)`` (Chen et al. 2021), the probability that at least
  one of ``k`` samples drawn without replacement from ``n`` (``c`` correct) is correct.
- :func:`paired_bootstrap_diff`: mean of ``a - b`` over the same problems, with a bootstrap CI that
  resamples problems (keeping pairs together) and the one-sided share of resamples with diff <= 0.
- :func:`paired_bootstrap_macro`: the same for the MACRO average over benchmarks,
  ``D = (1/B) sum_b mean_{i in b}(a_i - b_i)``: problems are resampled within each benchmark
  (each benchmark keeps its size), so GSM8K's 1,319 problems weigh as much as AIME's 30.
- :func:`wilson_ci`: Wilson score interval of a proportion ``k/n``,
  ``(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``; unlike the percentile bootstrap it
  does not collapse to ``[0, 0]`` at 0/10 or ``[1, 1]`` at 10/10.
- :func:`majority_vote`: maj@k — the answer given most often among ``k`` samples, answers
  grouped by an equivalence function; ties are broken towards the group seen first (in sample
  order), and a sample without an answer never votes.
"""

from __future__ import annotations

from typing import Callable, Hashable, Mapping, Sequence, TypeVar

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


def wilson_ci(k: int | float, n: int, *, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval (95% by default) of a proportion with ``k`` successes in ``n`` trials."""
    if n <= 0:
        return (float("nan"), float("nan"))
    if not 0 <= k <= n:
        raise ValueError(f"wilson_ci needs 0 <= k <= n (k={k}, n={n})")
    p = k / n
    centre = p + z * z / (2 * n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    den = 1 + z * z / n
    return (float(max(0.0, (centre - half) / den)), float(min(1.0, (centre + half) / den)))


A = TypeVar("A")


def majority_vote(answers: Sequence[A | None], same: Callable[[A, A], bool] | None = None) -> int | None:
    """Index (into ``answers``) of a representative of the most frequent answer group, or None.

    ``same(x, y)`` says whether two answers are equivalent (default ``==``); groups are formed
    greedily against each group's first member. Ties go to the group whose first member came first.
    """
    eq = same or (lambda x, y: x == y)
    groups: list[tuple[int, int]] = []  # (first index, count)
    for i, a in enumerate(answers):
        if a is None:
            continue
        for g, (first, count) in enumerate(groups):
            if eq(answers[first], a):  # type: ignore[arg-type]
                groups[g] = (first, count + 1)
                break
        else:
            groups.append((i, 1))
    if not groups:
        return None
    best = max(c for _, c in groups)
    return next(first for first, c in groups if c == best)


K = TypeVar("K", bound=Hashable)


def paired_bootstrap_macro(a: Mapping[K, Sequence[float]], b: Mapping[K, Sequence[float]], *, n_boot: int = 2000,
                           seed: int = 0, alpha: float = 0.05) -> dict[str, float]:
    """Paired comparison of the macro average over benchmarks.

    ``a[bench]`` and ``b[bench]`` are per-problem scores on the same problems in the same order.
    Each resample draws, within every benchmark independently, as many problems as it has (with
    replacement), and takes the unweighted mean over benchmarks of the per-benchmark mean
    difference. Returns ``diff``, ``lo``/``hi`` and ``p_le_0`` as :func:`paired_bootstrap_diff`,
    plus ``n_benchmarks`` and ``n_problems``.
    """
    if set(a) != set(b):
        raise ValueError(f"paired macro comparison needs the same benchmarks ({sorted(map(str, a))} vs {sorted(map(str, b))})")
    diffs = []
    for k in a:
        x, y = np.asarray(a[k], dtype=float), np.asarray(b[k], dtype=float)
        if x.shape != y.shape:
            raise ValueError(f"benchmark {k}: paired comparison needs equal lengths ({x.size} vs {y.size})")
        if x.size:
            diffs.append(x - y)
    if not diffs:
        return {"diff": float("nan"), "lo": float("nan"), "hi": float("nan"), "p_le_0": float("nan"),
                "n_benchmarks": 0, "n_problems": 0}
    rng = np.random.default_rng(seed)
    boot = np.zeros(n_boot)
    for d in diffs:  # benchmark by benchmark: resampling never moves a problem across benchmarks
        boot += d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    boot /= len(diffs)
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return {"diff": float(np.mean([d.mean() for d in diffs])), "lo": float(lo), "hi": float(hi),
            "p_le_0": float((boot <= 0).mean()), "n_benchmarks": len(diffs), "n_problems": int(sum(d.size for d in diffs))}
