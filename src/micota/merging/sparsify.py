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
CHUNK = 1 << 22
_CHUNK = CHUNK
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


def _count(mask: torch.Tensor) -> int:
    """Nonzeros of a 0/1 float mask, counted on its integer bits (much faster than on bf16 values)."""
    return int(mask.view(_INT_VIEW[mask.dtype]).count_nonzero()) if mask.dtype in _INT_VIEW else int(mask.count_nonzero())


def _work_dtype(d: torch.Tensor) -> torch.dtype:
    # torch.bernoulli has no CPU float16 kernel: mergekit works in bf16 for bf16, else float32.
    return d.dtype if d.dtype == torch.bfloat16 else torch.float32


def _radix_select(d: torch.Tensor, m: int, largest: bool) -> torch.Tensor:
    """Bool mask of the ``m`` largest (or smallest) |δ|; ties broken by lowest index.

    Exact and O(n) per 16-bit digit with O(chunk) scratch: |δ|'s IEEE bits, read as integers, order
    like the values, so the threshold is found digit by digit from histograms; then the first ``r``
    entries equal to it (in index order) are taken.
    """
    n = d.numel()
    mask = torch.zeros(n, dtype=torch.bool)
    if m <= 0:
        return mask
    if m >= n:
        return mask.fill_(True)
    flat, view = d.reshape(-1), _INT_VIEW[d.dtype]
    bits = d.element_size() * 8

    def keys(s: int) -> torch.Tensor:  # int16 keys bincount as is; wider ones as int64
        k = flat[s:s + _CHUNK].abs().view(view)
        return k if bits == 16 else k.to(torch.int64)

    prefix, remaining = 0, m
    for shift in range(bits - 16, -1, -16):
        hist = torch.zeros(1 << 16, dtype=torch.int64)
        for s in range(0, n, _CHUNK):
            c = keys(s)
            if shift + 16 < bits:
                c = c[(c >> (shift + 16)) == prefix]
            hist += torch.bincount(c if bits == 16 else (c >> shift) & 0xFFFF, minlength=1 << 16)
        order = hist.flip(0) if largest else hist
        cum = order.cumsum(0)
        pos = int(torch.searchsorted(cum, remaining))
        before = int(cum[pos - 1]) if pos else 0
        digit = (1 << 16) - 1 - pos if largest else pos
        remaining -= before
        prefix = (prefix << 16) | digit
    thr, taken = prefix, 0
    for s in range(0, n, _CHUNK):
        c = keys(s)
        sel = (c > thr) if largest else (c < thr)
        if remaining - taken > 0:
            take = (c == thr).nonzero().squeeze(1)[: remaining - taken]
            taken += take.numel()
            sel[take] = True
        mask[s:s + _CHUNK] = sel
    return mask


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
        mask = _radix_select(d, k, largest=True).to(d.dtype)
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
        keep = _radix_select(d, n_bot + target, largest=False) & ~_radix_select(d, n_bot, largest=False)
        mask = keep.to(d.dtype)
    return _rescaled(d, mask.reshape_as(d), rescale), target


def bernoulli(d: torch.Tensor, density: float, rescale: bool, gen: torch.Generator) -> tuple[torch.Tensor, int]:
    """DARE: ``m ~ Bernoulli(density)`` elementwise, drawn in the working dtype."""
    if density >= 1:
        return d, d.numel()
    work = _work_dtype(d)
    mask = torch.bernoulli(torch.full_like(d, density, dtype=work), generator=gen)
    kept = _count(mask)
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
    kept = _count(mask)
    return _rescaled(t.to(work), mask, rescale).to(d.dtype).reshape(shape), kept
