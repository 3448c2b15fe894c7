"""Validity checks: the preconditions an experiment must meet before a claim can be judged.

Each check is computed from stored stage outputs and gates the claims it names; a claim with a
failed (or uncomputable) check gets the verdict ``not testable`` (:data:`claims.NOT_TESTABLE`).
Thresholds are report-config keys (recipe keys) with the defaults below.

- ``task_vector``: size of the TA fine-tune, ``‖θ_ft − θ_base‖₂ / ‖θ_base‖₂`` over all floating
  tensors ≤ ``max_task_vector`` (0.05; an LLM fine-tune at lr 1e-5 for 2 epochs is 0.005–0.03). Read
  from the merge's ``merge_report.json`` (``task_vector.relative``), else computed from the models.
- ``interpolation``: a plain linear merge at weight 0.5 writes mean length strictly between the
  base's and the fine-tune's, at least ``interpolation_margin`` (10%) of the gap away from each:
  ``pos = (L_lin − L_base) / (L_ft − L_base)`` in ``[margin, 1 − margin]``.
- ``base_knows:<label>``: the base's bits per token on a trace style < ``log2 V`` (the uniform
  guess over the vocabulary) — a style the base never saw scores worse than uniform.
- ``bpc_uniform:<label>``: a dataset's BPC under the student base < its uniform-vocabulary BPC,
  ``log2 V · tokens / chars``.
- ``long_cot_helps``: accuracy(fine-tuned TA) − accuracy(TA base) on the hard split ≥ 0, and the
  fine-tuned TA solves some hard problems (two models at zero do not show that long CoT helps).
- ``step_by_step_helps``: the mid-trained student beats the short-trained one on the hard split
  (accuracy difference > 0): the world is one where working step by step pays.
- ``truncation:<model>``: share of completions cut by ``max_new_tokens`` ≤ ``max_truncation`` (5%).
- ``data_size:<variant>``: training examples ≥ ``min_examples`` (200).
- ``same_problems``: the variants compared in claim (ii) are trained on the same problem ids.
- ``converged:<variant>``: the share of the run's loss reduction that still happens in its last
  quarter, less what the noise of the logged losses allows: with q3, q4 the 3rd and 4th quarters of
  the logged losses (means m3, m4, variances s3², s4², sizes n3, n4),
  ``(m3 − m4 − z·sqrt(s3²/n3 + s4²/n4)) / (L_first − m4)`` ≤ ``max_late_loss_drop`` (0.1), for every
  seed; z = ``converged_z`` (1.645: the one-sided 95% lower bound of the drop). A plateau is a curve
  whose last quarter adds little to what training achieved; a fine-tune that starts near its final
  loss has a small denominator, and there the point ratio alone reads logging noise as a late drop.
  The point ratio (z = 0, ``late_loss_drop``) and the drop / m4 (``late_loss_drop_vs_final``) are
  reported beside it.
- ``student_base``: the untouched student base was evaluated (its row stands beside every student).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from micota.io import read_json


def check(name: str, value: float | None, threshold: str, passed: bool | None, claims: Sequence[str], how: str) -> dict[str, Any]:
    """One row of the validity table; ``passed`` None (not computable) counts as failed."""
    if value is not None and isinstance(value, float) and not math.isfinite(value):
        value, passed = None, False
    return {"name": name, "value": value, "threshold": threshold, "passed": bool(passed), "claims": list(claims), "how": how}


def failed_for(checks: list[dict[str, Any]], claim: str) -> list[str]:
    return [c["name"] for c in checks if claim in c["claims"] and not c["passed"]]


def task_vector_ratio(base: str | Path, finetuned: str | Path) -> float:
    """‖θ_ft − θ_base‖₂ / ‖θ_base‖₂ over the floating tensors both safetensors folders hold."""
    import torch
    from safetensors import safe_open

    def tensors(d: Path) -> dict[str, Path]:
        return {k: f for f in sorted(Path(d).glob("*.safetensors")) for k in safe_open(str(f), "pt").keys()}

    tb, tf = tensors(Path(base)), tensors(Path(finetuned))
    num = den = 0.0
    for name in sorted(set(tb) & set(tf)):
        with safe_open(str(tb[name]), "pt") as fb, safe_open(str(tf[name]), "pt") as ff:
            b, f = fb.get_tensor(name), ff.get_tensor(name)
        if not b.is_floating_point():
            continue
        b, f = b.double(), f.double()
        num += float(torch.sum((f - b) ** 2))
        den += float(torch.sum(b ** 2))
    return math.sqrt(num) / math.sqrt(den) if den else math.nan


def vocab_size(model: str | Path) -> int | None:
    cfg = Path(model) / "config.json"
    return int(read_json(cfg)["vocab_size"]) if cfg.is_file() else None


def late_loss_drop(curve: list[dict[str, float]], *, vs_final: bool = False, z: float = 0.0) -> float | None:
    """(m3 − m4 − z·sqrt(s3²/n3 + s4²/n4)) / (L_first − m4) over the logged losses (quarters as in the
    module docstring; the sample variances need two points per quarter when z > 0); with ``vs_final``,
    divided by m4 instead."""
    losses = [float(p["loss"]) for p in curve if p.get("loss") is not None]
    if len(losses) < 4 or (z and len(losses) < 8):
        return None
    q = len(losses) // 4
    q3, q4 = losses[-2 * q:-q], losses[-q:]
    m3, m4 = sum(q3) / len(q3), sum(q4) / len(q4)
    noise = 0.0
    if z:
        var = lambda xs, m: sum((x - m) ** 2 for x in xs) / (len(xs) - 1)  # noqa: E731
        noise = z * math.sqrt(var(q3, m3) / len(q3) + var(q4, m4) / len(q4))
    denom = m4 if vs_final else losses[0] - m4
    return (m3 - m4 - noise) / denom if denom > 0 else None


def interpolation_position(base_len: float, ft_len: float, lin_len: float) -> float | None:
    gap = ft_len - base_len
    return (lin_len - base_len) / gap if gap else None
