"""A second implementation of the fast merge path's kernel (src/micota/merging/kernel.c) in plain numpy,
one array operation per step of fast.py's formula, for bit-for-bit comparisons in the tests.

Definitions it shares with the kernel (and nothing else): DARE block ``j`` keeps element ``i`` when the
``i``-th uint32 of ``SFC64(SeedSequence([seed, j])).random_raw`` is below ``density·2³²``; TIES keeps the
``k = max(1, ⌊density·n⌋)`` largest |δ| (lowest index first among equals); a sum is, per block, eight
float64 lanes (lane ``i mod 8`` adds element ``i`` in index order) combined as
``((L0+L1)+(L2+L3))+((L4+L5)+(L6+L7))``, the block totals added in block order.
"""

from __future__ import annotations

import numpy as np


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """Round to nearest, ties to even (finite values)."""
    u = x.view(np.uint32).astype(np.uint64)
    return ((((u >> 16) & 1) + 0x7FFF + u) >> 16).astype(np.uint16)


def keep_mask(seed: int, block: int, n: int, density: float) -> np.ndarray:
    raw = np.random.SFC64(np.random.SeedSequence([seed, block])).random_raw((n + 1) // 2)
    return raw.view(np.uint32)[:n] < min(round(density * 2.0 ** 32), 2 ** 32)


def lane_sum(x: np.ndarray, block: int) -> float:
    """The kernel's sum of float64 values ``x`` (module docstring); cumsum is sequential by definition."""
    total = 0.0
    for s in range(0, x.size, block):
        part = x[s:s + block]
        lanes = np.zeros(-(-part.size // 8) * 8)
        lanes[: part.size] = part
        L = np.cumsum(lanes.reshape(-1, 8), axis=0)[-1] if part.size else np.zeros(8)
        total += ((L[0] + L[1]) + (L[2] + L[3])) + ((L[4] + L[5]) + (L[6] + L[7]))
    return total


def merge(b_raw: np.ndarray, f_raw: np.ndarray, out_bf16: bool, sparsifier: str | None, consensus: bool,
          normalize: bool, rescale: bool, density: float, w: float, lam: float, seed: int, block: int):
    """(output bits, Σ|δ|, Σδ², Σb², kept) of one tensor; raw inputs are uint16 bf16 or uint32 float32 bits."""
    b = bf16_to_f32(b_raw) if b_raw.dtype == np.uint16 else b_raw.view(np.float32)
    f = bf16_to_f32(f_raw) if f_raw.dtype == np.uint16 else f_raw.view(np.float32)
    n = b.size
    d = f - b
    a = np.abs(d)
    w, lam = np.float32(w), np.float32(lam)
    keep = None
    if sparsifier == "random" and density < 1:
        keep = np.concatenate([keep_mask(seed, j, min(block, n - s), density)
                               for j, s in enumerate(range(0, n, block))] or [np.zeros(0, bool)])
    elif sparsifier == "magnitude" and density < 1 and n:
        k = max(1, int(density * n))
        keep = np.zeros(n, bool)
        keep[np.argsort(-a.view(np.uint32).astype(np.int64), kind="stable")[:k]] = True
    before = lane_sum(a.astype(np.float64), block)
    dd = lane_sum(d.astype(np.float64) ** 2, block)
    bb = lane_sum(b.astype(np.float64) ** 2, block)
    if keep is not None:
        after = lane_sum((a * keep.astype(np.float32)).astype(np.float64), block)
        d = d * keep.astype(np.float32)
        if rescale and not (np.float32(before) < 1e-7 or np.float32(after) < 1e-7):
            d = d * (np.float32(before) / np.float32(after))
    d = d * w
    if normalize:
        if consensus:
            if w != 0:
                d = d / w
        else:
            d = d / (np.float32(1) if abs(float(w)) < 1e-8 else w)
    if lam != 1:
        d = d * lam
    out = b + d
    kept = n if keep is None else int(keep.sum())
    return (f32_to_bf16(out) if out_bf16 else out.view(np.uint32)), before, dd, bb, kept
