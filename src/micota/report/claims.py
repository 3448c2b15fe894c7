"""The paper's three claims as functions of the numbers, each with a verdict from its CI.

Verdicts are ``reproduced``, ``not reproduced`` or ``inconclusive`` (the CI straddles the
threshold); they are computed here, never written by hand. A claim whose validity checks
(:mod:`micota.report.checks`) fail is ``not testable`` whatever its numbers say (:func:`gate`).

(i)   merged TA writes markedly shorter traces — mean completion tokens merged / fine-tuned in
      ``length_range`` (0.3–0.7) — while keeping ≥ ``retention`` (90%) of the fine-tuned TA's
      accuracy. Both ratios get a paired bootstrap CI over problems (ratio of means per resample).
      Reproduced iff the length-ratio CI lies inside the range and the retention CI's low end is
      ≥ the threshold; not reproduced iff the length CI lies wholly outside the range or the
      retention CI's high end is below the threshold.
(ii)  students trained on Mid-CoT beat students trained on long CoT: paired bootstrap of
      per-problem accuracy difference (mid − long) pooled over splits; CI low > 0 reproduced,
      CI high < 0 not reproduced.
(iii) Mid-CoT has lower BPC than long CoT under the student base: difference of character-weighted
      BPC (mid − long) with an independent bootstrap over records of each dataset; CI high < 0
      reproduced, CI low > 0 not reproduced.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
NOT_TESTABLE = "not testable"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_TESTABLE)


def gate(verdict: str, why: str, failed_checks: list[str]) -> tuple[str, str]:
    """The verdict a claim gets once its validity checks are known: ``not testable`` if any failed."""
    if failed_checks:  # a missing-data reason stays visible; a verdict's reason does not
        return NOT_TESTABLE, "failed validity checks: " + ", ".join(failed_checks) + (f"; {why}" if verdict == INCONCLUSIVE else "")
    return verdict, why


def ratio_of_means_ci(num: Sequence[float], den: Sequence[float], *, n_boot: int = 2000, seed: int = 0,
                      alpha: float = 0.05) -> tuple[float, float, float]:
    """(ratio, lo, hi): mean(num)/mean(den) with a paired percentile bootstrap (pairs resampled)."""
    x, y = np.asarray(num, float), np.asarray(den, float)
    if x.size == 0 or y.sum() == 0:
        return (math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    dens = y[idx].sum(axis=1)
    ratios = np.where(dens > 0, x[idx].sum(axis=1) / np.where(dens > 0, dens, 1), np.nan)
    ratios = ratios[~np.isnan(ratios)]
    lo, hi = np.quantile(ratios, [alpha / 2, 1 - alpha / 2])
    return (float(x.sum() / y.sum()), float(lo), float(hi))


def weighted_ratio_diff_ci(a_num: Sequence[float], a_den: Sequence[float], b_num: Sequence[float], b_den: Sequence[float],
                           *, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float, float]:
    """(diff, lo, hi) of sum(a_num)/sum(a_den) − sum(b_num)/sum(b_den), resampling a and b independently."""
    an, ad, bn, bd = (np.asarray(v, float) for v in (a_num, a_den, b_num, b_den))
    if an.size == 0 or bn.size == 0:
        return (math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, an.size, size=(n_boot, an.size))
    ib = rng.integers(0, bn.size, size=(n_boot, bn.size))
    diffs = an[ia].sum(1) / ad[ia].sum(1) - bn[ib].sum(1) / bd[ib].sum(1)
    lo, hi = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    return (float(an.sum() / ad.sum() - bn.sum() / bd.sum()), float(lo), float(hi))


def verdict_claim_i(length: tuple[float, float, float], retention: tuple[float, float, float],
                    length_range: tuple[float, float], min_retention: float) -> tuple[str, str]:
    (_, llo, lhi), (_, rlo, rhi) = length, retention
    if any(math.isnan(v) for v in (llo, lhi, rlo, rhi)):
        return INCONCLUSIVE, "a ratio is undefined (no samples, or the fine-tuned TA solved nothing)"
    lo_t, hi_t = length_range
    if lhi < lo_t or llo > hi_t:
        return NOT_REPRODUCED, "length-ratio CI lies outside the target range"
    if rhi < min_retention:
        return NOT_REPRODUCED, "accuracy-retention CI lies below the threshold"
    if lo_t <= llo and lhi <= hi_t and rlo >= min_retention:
        return REPRODUCED, "length-ratio CI inside the range and retention CI above the threshold"
    return INCONCLUSIVE, "a CI straddles its threshold"


def verdict_positive(diff: tuple[float, float, float], *, better: str) -> tuple[str, str]:
    """``better='higher'``: the claim holds when the diff is > 0; ``'lower'``: when < 0."""
    _, lo, hi = diff
    if math.isnan(lo) or math.isnan(hi):
        return INCONCLUSIVE, "no data"
    good, bad = (lo > 0, hi < 0) if better == "higher" else (hi < 0, lo > 0)
    if good:
        return REPRODUCED, "the CI of the difference excludes 0 in the claimed direction"
    if bad:
        return NOT_REPRODUCED, "the CI of the difference excludes 0 in the opposite direction"
    return INCONCLUSIVE, "the CI of the difference includes 0"
