"""The one NaN/Inf check for tensors (merged weights, BPC losses): a non-finite result is an error.

A float is NaN or ±Inf exactly when its exponent bits are all ones, so :func:`all_finite` tests
``(bits & EXP) == EXP`` on an integer view, chunk by chunk (no float temporaries the size of the tensor).
"""

from __future__ import annotations

from typing import Any

from micota.errors import UserError

_EXP_BITS = {"bfloat16": ("int16", 0x7F80), "float16": ("int16", 0x7C00),
             "float32": ("int32", 0x7F800000), "float64": ("int64", 0x7FF0000000000000)}


def all_finite(t: Any) -> bool:
    """True if the float tensor ``t`` holds no NaN/Inf (integer tensors are always finite)."""
    import torch

    name = str(t.dtype).removeprefix("torch.")
    if name not in _EXP_BITS:
        return True
    view, exp = _EXP_BITS[name]
    flat = t.detach().reshape(-1).contiguous().view(getattr(torch, view))
    return not any(bool(((c & exp) == exp).any()) for c in flat.split(1 << 22))


def require_finite(t: Any, what: str) -> Any:
    """``t``, or a :class:`UserError` naming ``what`` if it holds NaN/Inf."""
    if not all_finite(t):
        raise UserError(f"{what} has NaN/Inf values")
    return t
