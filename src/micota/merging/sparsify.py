"""Sparsifiers for task vectors δ (mergekit 0.1.5 semantics, own implementation).

Every function takes one task vector ``d`` (working dtype) and returns ``(sparse_d, kept)`` where
``kept`` is the number of entries the mask kept.

- :func:`magnitude` (TIES): keep the ``k = max(1, ⌊density·n⌋)`` largest ``|δ|``.
- :func:`magnitude_outliers` (breadcrumbs): drop the ``⌊γ·n⌋`` largest and the smallest, keeping
  ``⌊density·n⌋`` entries of ascending rank ``[n_bot, n_bot + target)``.
- :func:`bernoulli` (DARE): keep each entry with probability ``density``.
- :func:`della_magprune` (DELLA): keep with probability ``density − ε + 2ε·rank_norm(|δ|)`` per row.

Rescale (``rescale=True``) is L1-norm matching: ``δ̃ = (m⊙δ)·‖δ‖₁/‖m⊙δ‖₁`` (skipped when either
norm < 1e-7) — not ``1/density``.

Ties at the selection threshold: ``exact_sort=True`` reproduces mergekit bit for bit by using the
same (unstable) ``torch.argsort``; the default picks the same count by an O(n) radix selection
that breaks ties by lowest index — identical unless |δ| has equal values straddling the threshold.
Random masks come from the ``torch.Generator`` passed in (see :mod:`micota.merging.engine`).
"""

from __future__ import annotations

import torch

EPS = 1e-7
_CHUNK = 1 << 23
_INT_VIEW = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32,
             torch.float64: torch.int64}


def _rescaled(d: torch.Tensor, mask: torch.Tensor, rescale: bool) -> torch.Tensor:
    """``mask⊙δ``, times ``‖δ‖₁/‖mask⊙δ‖₁`` when ``rescale`` (sums in δ's dtype, like mergekit)."""
    masked = d * mask
    if not rescale:
        return masked
    before = d.abs().sum()
    after = masked.abs().sum()
    if before < EPS or after < EPS:
        return masked
    return masked * (before / after)


def _work_dtype(d: torch.Tensor) -> torch.dtype:
    # torch.bernoulli has no CPU float16 kernel: mergekit works in bf16 for bf16, else float32.
    return d.dtype if d.dtype == torch.bfloat16 else torch.float32


def _radix_select(keys: torch.Tensor, m: int, largest: bool) -> torch.Tensor:
    """Bool mask of the ``m`` largest (or smallest) non-negative integer ``keys``; ties by lowest index.

    Exact, O(n) per 16-bit digit, memory O(chunk): the threshold key is found digit by digit from
    histograms, then the first ``r`` keys equal to it (in index order) are taken.
    """
    n = keys.numel()
    mask = torch.zeros(n, dtype=torch.bool)
    if m <= 0:
        return mask
    if m >= n:
        return mask.fill_(True)
    bits = keys.element_size() * 8
    prefix, remaining = 0, m
    for shift in range(bits - 16, -1, -16):
        hist = torch.zeros(1 << 16, dtype=torch.int64)
        for s in range(0, n, _CHUNK):
            c = keys[s:s + _CHUNK].to(torch.int64)
            if shift + 16 < bits:
                c = c[(c >> (shift + 16)) == prefix]
            hist += torch.bincount((c >> shift) & 0xFFFF, minlength=1 << 16)
        order = hist.flip(0) if largest else hist
        cum = order.cumsum(0)
        pos = int(torch.searchsorted(cum, remaining))
        before = int(cum[pos - 1]) if pos else 0
        digit = (1 << 16) - 1 - pos if largest else pos
        remaining -= before
        prefix = (prefix << 16) | digit
    thr, taken = prefix, 0
    for s in range(0, n, _CHUNK):
        c = keys[s:s + _CHUNK].to(torch.int64)
        sel = (c > thr) if largest else (c < thr)
        eq = (c == thr).nonzero().squeeze(1)
        take = eq[: max(0, remaining - taken)]
        taken += take.numel()
        sel[take] = True
        mask[s:s + _CHUNK] = sel
    return mask


def _abs_keys(d: torch.Tensor) -> torch.Tensor:
    """Monotonic integer keys of |δ| (the IEEE bits of a non-negative float order like the value)."""
    return d.abs().reshape(-1).view(_INT_VIEW[d.dtype])


def magnitude(d: torch.Tensor, density: float, rescale: bool, *, exact_sort: bool = False) -> tuple[torch.Tensor, int]:
    """TIES trim: keep the ``max(1, ⌊density·n⌋)`` entries of largest |δ|."""
    n = d.numel()
    if density >= 1 or n == 0:
        return d, n
    k = max(1, int(density * n))
    if exact_sort:
        mask = torch.zeros(n, dtype=d.dtype)
        mask[torch.argsort(d.abs().reshape(-1).float(), descending=True)[:k]] = 1
    else:
        mask = _radix_select(_abs_keys(d), k, largest=True).to(d.dtype)
    return _rescaled(d, mask.reshape_as(d), rescale), k


def magnitude_outliers(d: torch.Tensor, density: float, rescale: bool, gamma: float = 0.01, *,
                       exact_sort: bool = False) -> tuple[torch.Tensor, int]:
    """Breadcrumbs: drop the ``⌊γ·n⌋`` largest outliers and the smallest; keep ``⌊density·n⌋``."""
    n = d.numel()
    if density >= 1:
        return d, n
    target = int(density * n)
    n_top = int(gamma * n)
    n_bot = max(0, n - target - n_top)
    if exact_sort:
        mask = torch.zeros(n, dtype=d.dtype)
        mask[torch.sort(d.abs().reshape(-1).float(), descending=False).indices[n_bot:n_bot + target]] = 1
    else:
        keys = _abs_keys(d)
        keep = _radix_select(keys, n_bot + target, largest=False) & ~_radix_select(keys, n_bot, largest=False)
        mask = keep.to(d.dtype)
    return _rescaled(d, mask.reshape_as(d), rescale), target


def bernoulli(d: torch.Tensor, density: float, rescale: bool, gen: torch.Generator) -> tuple[torch.Tensor, int]:
    """DARE: ``m ~ Bernoulli(density)`` elementwise, drawn in the working dtype."""
    if density >= 1:
        return d, d.numel()
    work = _work_dtype(d)
    mask = torch.bernoulli(torch.full_like(d, density, dtype=work), generator=gen)
    kept = int(mask.count_nonzero())
    return _rescaled(d.to(work), mask, rescale).to(d.dtype), kept


def della_magprune(d: torch.Tensor, density: float, rescale: bool, gen: torch.Generator,
                   epsilon: float = 0.15) -> tuple[torch.Tensor, int]:
    """DELLA: per row, ``p = density − ε + 2ε·(rank(|δ|) − min)/(max − min)``; ``m ~ Bernoulli(p)``."""
    if density >= 1:
        return d, d.numel()
    work = _work_dtype(d)
    shape = d.shape
    t = d.unsqueeze(0) if d.dim() < 2 else d
    ranks = torch.argsort(torch.argsort(t.abs(), dim=1, descending=False), dim=1).to(work) + 1
    lo = ranks.min(dim=1, keepdim=True).values
    hi = ranks.max(dim=1, keepdim=True).values
    rank_norm = ((ranks - lo) / (hi - lo)).clamp(0, 1)
    probs = (density - epsilon) + rank_norm * 2 * epsilon
    mask = torch.bernoulli(probs, generator=gen).to(work)
    kept = int(mask.count_nonzero())
    return _rescaled(t.to(work), mask, rescale).to(d.dtype).reshape(shape), kept
