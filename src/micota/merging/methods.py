"""Merge methods: a registry of typed functions, one per method, formula in the docstring.

Semantics, parameter names and defaults follow mergekit 0.1.5 (the reference its YAML files
assume); the code is ours. Notation: ``b`` base tensor, ``mᵢ`` the other models, task vector
``δᵢ = mᵢ − b``, per-model ``weight`` wᵢ and ``density`` dᵢ, shared ``lambda`` λ.

Every method has the same call shape::

    fn(base, models, per_model: list[dict], shared: dict, ctx: TensorContext) -> Tensor

``per_model`` holds each model's resolved parameters, ``shared`` the global ones. All arithmetic is
done in the working dtype of the inputs (``dtype:`` in the config), with the same sequence of
torch operations as mergekit, so deterministic methods are byte-identical to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from micota.merging import sparsify as sp

MISSING = object()


@dataclass
class TensorContext:
    """What a method may use besides tensors: the tensor name, a generator factory, a stats sink."""

    name: str
    generator: Callable[[int], torch.Generator]  # model index -> generator for its random mask
    exact_sort: bool = False
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    fn: Callable[..., torch.Tensor]
    per_model: dict[str, Any]  # parameter -> default (MISSING = required)
    shared: dict[str, Any]
    needs_base: bool = True
    n_models: tuple[int, int | None] = (1, None)  # (min, max) non-base models
    stream: tuple[str | None, bool] | None = None  # (sparsifier, consensus) when stream_single can run it


METHODS: dict[str, MethodSpec] = {}


def register(name: str, *, per_model: dict[str, Any], shared: dict[str, Any], needs_base: bool = True,
             n_models: tuple[int, int | None] = (1, None), stream: tuple[str | None, bool] | None = None) -> Callable:
    def deco(fn: Callable) -> Callable:
        METHODS[name] = MethodSpec(name, fn, per_model, shared, needs_base, n_models, stream)
        return fn
    return deco


# ---------------------------------------------------------------- generalized task arithmetic
def _task_arithmetic_family(base: torch.Tensor, models: list[torch.Tensor], per_model: list[dict], shared: dict,
                            ctx: TensorContext, *, sparsifier: str | None, consensus: bool) -> torch.Tensor:
    """``b + λ·Σᵢ wᵢ·S(δᵢ)·cᵢ / D`` — S a sparsifier, cᵢ the sign-consensus mask, D the normalizer."""
    if len(models) == 1 and not ctx.exact_sort and sparsifier != "della" and base.dtype in (torch.bfloat16, torch.float32):
        return _single_lean(base, models[0], per_model[0], shared, ctx, sparsifier, consensus)
    deltas, kept, norms = [], [], []
    for i, (m, p) in enumerate(zip(models, per_model)):
        d = m - base
        norms.append(float(_abs_sum(d.contiguous())))
        k = d.numel()
        if sparsifier == "magnitude":
            d, k = sp.magnitude(d, p["density"], shared["rescale"], exact_sort=ctx.exact_sort)
        elif sparsifier == "random":
            d, k = sp.bernoulli(d, p["density"], shared["rescale"], ctx.generator(i))
        elif sparsifier == "magnitude_outliers":
            d, k = sp.magnitude_outliers(d, p["density"], shared["rescale"], p["gamma"], exact_sort=ctx.exact_sort)
        elif sparsifier == "della":
            d, k = sp.della_magprune(d, p["density"], shared["rescale"], ctx.generator(i), p["epsilon"])
        deltas.append(d)
        kept.append(k / max(1, d.numel()))
    ctx.stats.update(delta_l1=norms, kept_fraction=kept)
    stacked = deltas[0].unsqueeze(0) if len(deltas) == 1 else torch.stack(deltas)
    del deltas
    weights = torch.tensor([p["weight"] for p in per_model], dtype=stacked.dtype)
    weights = weights.reshape((len(per_model),) + (1,) * base.dim())
    stacked.mul_(weights)
    if consensus and len(per_model) == 1 and not shared["normalize"]:
        # one model: every nonzero entry agrees with the elected sign, so the election is the identity
        mixed = stacked.sum(dim=0)
    elif consensus:
        majority = torch.where(stacked.sum(dim=0) >= 0, 1, -1).to(base.dtype)
        mask = stacked.sign() == majority
        mixed = (stacked * mask).sum(dim=0)
        divisor = (weights * mask).sum(dim=0)
        divisor[divisor == 0] = 1
    else:
        mixed = stacked.sum(dim=0)
        divisor = weights.sum(dim=0)
        divisor[divisor.abs() < 1e-8] = 1
    if shared["normalize"]:
        mixed /= divisor  # (the single-model shortcut above never normalizes)
    if shared["lambda"] != 1:
        mixed *= shared["lambda"]
    return (base + mixed).to(base.dtype)


def _chunks(*ts: torch.Tensor):
    """Aligned flat chunks of contiguous same-size tensors (views: in-place ops write through)."""
    flat = [t.view(-1) for t in ts]
    for s in range(0, flat[0].numel(), sp.CHUNK):
        yield [f[s:s + sp.CHUNK] for f in flat]


def _abs_sum(d: torch.Tensor) -> torch.Tensor:
    """‖δ‖₁ as a 0-dim tensor in δ's dtype: torch's own sum when δ fits one chunk (== mergekit),
    else float32 chunk sums added in float64 (no full-size temporary)."""
    if d.numel() <= sp.CHUNK:
        return d.abs().sum()
    total = sum(float(c.abs().sum(dtype=torch.float32)) for (c,) in _chunks(d))
    return torch.tensor(total, dtype=d.dtype)


def _single_lean(base: torch.Tensor, m: torch.Tensor, p: dict, shared: dict, ctx: TensorContext,
                 sparsifier: str | None, consensus: bool) -> torch.Tensor:
    """One model, default mode: the general path's values computed in place, chunk by chunk.

    Peak memory is base + δ (+ a bool mask for magnitude selection) instead of ~8 full temporaries.
    With one model the sign election keeps exactly the nonzero entries, and Σ over one model is
    ``x + 0`` (it turns −0 into +0), so every step below reproduces the general path bit for bit —
    except that a rescale sum over a tensor larger than one chunk is accumulated in float64.
    """
    d = m.sub_(base)  # δ = m − b (m is our private copy)
    n = d.numel()
    density, rescale = p.get("density", 1.0), shared["rescale"] and sparsifier is not None and p.get("density", 1.0) < 1
    before = _abs_sum(d)
    ctx.stats["delta_l1"] = [float(before)]
    kept = n
    if sparsifier in ("magnitude", "magnitude_outliers") and density < 1:
        if sparsifier == "magnitude":
            kept = max(1, int(density * n))
            keep = sp._radix_select(d, kept, largest=True)
        else:
            kept = int(density * n)
            n_bot = max(0, n - kept - int(p["gamma"] * n))
            keep = sp._radix_select(d, n_bot + kept, largest=False) & ~sp._radix_select(d, n_bot, largest=False)
        for dc, kc in _chunks(d, keep):
            dc.mul_(kc)
        del keep
    elif sparsifier == "random" and density < 1:
        kept = 0
        gen = ctx.generator(0)
        for (dc,) in _chunks(d):
            mask = torch.rand(dc.shape, generator=gen) < density  # Bernoulli(density), 4x cheaper than torch.bernoulli
            kept += int(mask.count_nonzero())
            dc.mul_(mask)
    ctx.stats["kept_fraction"] = [round(kept / max(1, n), 6)]
    if rescale:
        after = _abs_sum(d)
        if not (before < sp.EPS or after < sp.EPS):
            scale = before / after
            for (dc,) in _chunks(d):
                dc.mul_(scale)
    w = torch.tensor(p["weight"], dtype=d.dtype)
    divisor = w if w.abs() >= 1e-8 else torch.ones((), dtype=d.dtype)
    for bc, sc in _chunks(base, d):
        sc.mul_(w).add_(0.0)  # w·δ̃, then Σ over one model (−0 → +0)
        if shared["normalize"]:
            if consensus:  # Σ w·[elected] is w where δ̃ ≠ 0, else 0 → 1
                sc.copy_(torch.where(sc != 0, sc / w, sc))
            else:
                sc.div_(divisor)
        if shared["lambda"] != 1:
            sc.mul_(shared["lambda"])
        bc.add_(sc)
    return base


def stream_single(read: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]],
                  write: Callable[[int, torch.Tensor], None], n: int, dt: torch.dtype, p: dict, shared: dict,
                  ctx: TensorContext, sparsifier: str | None, consensus: bool) -> None:
    """:func:`_single_lean` for a tensor too big to hold: two passes over ``sp.CHUNK``-element blocks.

    ``read(start, count)`` returns fresh (base, fine-tune) blocks in the working dtype ``dt``, ``write(start,
    block)`` stores merged values. Pass 1 computes ‖δ‖₁ before and after the random mask; pass 2
    redraws the same masks (a fresh generator with the same seed, consumed block by block exactly as
    the in-memory path consumes it chunk by chunk), applies them with the rescale and the weight and
    writes each block. Byte-identical to :func:`_single_lean`; peak memory is a few blocks.
    Only magnitude-free sparsifiers (none, random) stream: top-k needs the whole |δ|.
    """
    if n <= sp.CHUNK:  # one block: _abs_sum would use torch's own sum
        raise ValueError("stream_single is for tensors larger than one chunk")
    density = p.get("density", 1.0)
    rescale = shared["rescale"] and sparsifier is not None and density < 1
    masked = sparsifier == "random" and density < 1

    def blocks(gen: torch.Generator | None):
        for s in range(0, n, sp.CHUNK):
            b, d = read(s, min(sp.CHUNK, n - s))
            d.sub_(b)
            before = float(d.abs().sum(dtype=torch.float32))
            kept = d.numel()
            if masked:
                mask = torch.rand(d.shape, generator=gen) < density
                kept = int(mask.count_nonzero())
                d.mul_(mask)
            yield s, b, d, before, kept

    before = after = 0.0
    kept = 0
    for _, _, d, bsum, k in blocks(ctx.generator(0) if masked else None):
        before, kept = before + bsum, kept + k
        if rescale:
            after += float(d.abs().sum(dtype=torch.float32))
    before_t, after_t = torch.tensor(before, dtype=dt), torch.tensor(after, dtype=dt)
    ctx.stats["delta_l1"] = [float(before_t)]
    ctx.stats["kept_fraction"] = [round(kept / max(1, n), 6)]
    scale = before_t / after_t if rescale and not (before_t < sp.EPS or after_t < sp.EPS) else None
    w = torch.tensor(p["weight"], dtype=dt)
    divisor = w if w.abs() >= 1e-8 else torch.ones((), dtype=dt)
    for s, b, d, _, _ in blocks(ctx.generator(0) if masked else None):
        if scale is not None:
            d.mul_(scale)
        d.mul_(w).add_(0.0)
        if shared["normalize"]:
            d.copy_(torch.where(d != 0, d / w, d)) if consensus else d.div_(divisor)
        if shared["lambda"] != 1:
            d.mul_(shared["lambda"])
        write(s, b.add_(d))


def _gta_params(normalize: bool, rescale: bool, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return dict(per_model={"weight": MISSING, "density": 1.0, **(extra or {})},
                shared={"normalize": normalize, "rescale": rescale, "lambda": 1.0, "int8_mask": False})


@register("task_arithmetic", **_gta_params(False, False), stream=(None, False))
def task_arithmetic(base, models, per_model, shared, ctx):
    """Task arithmetic: ``b + λ·Σᵢ wᵢδᵢ`` (÷ Σᵢwᵢ if ``normalize``)."""
    return _task_arithmetic_family(base, models, per_model, shared, ctx, sparsifier=None, consensus=False)


@register("ties", **_gta_params(True, False))
def ties(base, models, per_model, shared, ctx):
    """TIES: trim δᵢ to its top-dᵢ |δ|; elect sign s = sgn Σᵢ wᵢδ̃ᵢ; ``b + λ·Σᵢ wᵢδ̃ᵢ[sgn = s] / Σᵢ wᵢ[sgn = s]``."""
    return _task_arithmetic_family(base, models, per_model, shared, ctx, sparsifier="magnitude", consensus=True)


@register("dare_ties", **_gta_params(False, True), stream=("random", True))
def dare_ties(base, models, per_model, shared, ctx):
    """DARE-TIES: δ̃ᵢ = mᵢ⊙δᵢ·‖δᵢ‖₁/‖mᵢ⊙δᵢ‖₁, mᵢ ~ Bernoulli(dᵢ); sign election as TIES; ``b + λ·Σᵢ wᵢδ̃ᵢ[sgn = s]``."""
    return _task_arithmetic_family(base, models, per_model, shared, ctx, sparsifier="random", consensus=True)


@register("dare_linear", **_gta_params(False, True), stream=("random", False))
def dare_linear(base, models, per_model, shared, ctx):
    """DARE linear: δ̃ᵢ as DARE-TIES, no sign election: ``b + λ·Σᵢ wᵢδ̃ᵢ``."""
    return _task_arithmetic_family(base, models, per_model, shared, ctx, sparsifier="random", consensus=False)


@register("breadcrumbs", **_gta_params(False, False, {"gamma": 0.01}))
def breadcrumbs(base, models, per_model, shared, ctx):
    """Model Breadcrumbs: drop the γ largest and the smallest |δᵢ|, keep dᵢ; ``b + λ·Σᵢ wᵢδ̃ᵢ``."""
    return _task_arithmetic_family(base, models, per_model, shared, ctx, sparsifier="magnitude_outliers", consensus=False)


@register("breadcrumbs_ties", **_gta_params(False, False, {"gamma": 0.01}))
def breadcrumbs_ties(base, models, per_model, shared, ctx):
    """Breadcrumbs with TIES sign election: δ̃ᵢ as breadcrumbs; ``b + λ·Σᵢ wᵢδ̃ᵢ[sgn = s]``."""
    return _task_arithmetic_family(base, models, per_model, shared, ctx, sparsifier="magnitude_outliers", consensus=True)


@register("della", **_gta_params(True, True, {"epsilon": 0.15}))
def della(base, models, per_model, shared, ctx):
    """DELLA: rank-dependent Bernoulli keep p = dᵢ − ε + 2ε·rank_norm, L1 rescale, sign election, ÷ Σᵢ wᵢ[sgn = s]."""
    return _task_arithmetic_family(base, models, per_model, shared, ctx, sparsifier="della", consensus=True)


@register("della_linear", **_gta_params(False, True, {"epsilon": 0.15}))
def della_linear(base, models, per_model, shared, ctx):
    """DELLA linear: δ̃ᵢ as DELLA, no sign election: ``b + λ·Σᵢ wᵢδ̃ᵢ``."""
    return _task_arithmetic_family(base, models, per_model, shared, ctx, sparsifier="della", consensus=False)


# ---------------------------------------------------------------- linear and slerp
@register("linear", per_model={"weight": MISSING}, shared={"normalize": True}, needs_base=False)
def linear(base, models, per_model, shared, ctx):
    """Linear: ``Σᵢ wᵢ·mᵢ`` (÷ Σᵢwᵢ if ``normalize``), accumulated in float32 (float64 for float64).

    ``base`` is unused; when a base model is configured it is one of ``models`` (mergekit does so).
    """
    first = models[0]
    acc_dtype = torch.float64 if first.dtype == torch.float64 else torch.float32
    w = torch.tensor([p["weight"] for p in per_model], dtype=acc_dtype)
    out = torch.zeros_like(first, dtype=acc_dtype)
    coef_shape = (1,) * first.dim()
    for m, c in zip(models, w.unbind(0)):
        out.addcmul_(m, c.reshape(coef_shape))
    if shared["normalize"]:
        out.div_(w.sum().reshape(coef_shape))
    ctx.stats.update(delta_l1=[], kept_fraction=[])
    return out.to(first.dtype)


@register("slerp", per_model={}, shared={"t": MISSING}, n_models=(1, 1))
def slerp(base, models, per_model, shared, ctx):
    """SLERP per tensor: θ = arccos(⟨b/‖b‖, m/‖m‖⟩); ``sin((1−t)θ)/sin θ·b + sin(tθ)/sin θ·m``.

    Falls back to lerp ``(1−t)·b + t·m`` when |cos θ| > 0.9995. float32 math (float64 for float64).
    """
    t = float(shared["t"])
    dt = torch.float64 if base.dtype == torch.float64 else torch.float32
    a, b = base.reshape(-1).to(dt), models[0].reshape(-1).to(dt)
    na, nb = torch.linalg.vector_norm(a), torch.linalg.vector_norm(b)
    na = na if na > 1e-8 else torch.ones((), dtype=dt)
    nb = nb if nb > 1e-8 else torch.ones((), dtype=dt)
    dot = float(((a / na) * (b / nb)).sum().clamp(-1, 1))
    ctx.stats.update(delta_l1=[float((b - a).abs().sum())], kept_fraction=[1.0], cos=dot)
    if a.numel() == 0 or abs(dot) > 0.9995:
        ca, cb = 1 - t, t
    else:
        theta = torch.acos(torch.tensor(dot, dtype=dt))
        s = torch.sin(theta)
        ca, cb = float(torch.sin((1 - t) * theta) / s), float(torch.sin(t * theta) / s)
    return (ca * a + cb * b).reshape(base.shape).to(base.dtype)
