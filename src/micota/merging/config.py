"""The merge stage's typed config, mergekit YAML import and per-tensor parameter resolution.

``MergeConfig`` is the Python API, the CLI flags and the YAML keys. ``from_mergekit_yaml`` reads the
mergekit 0.1.5 subset micota supports (``merge_method``, ``base_model``, ``models[].model``,
``models[].parameters``, global ``parameters``, ``dtype``, ``out_dtype``, ``tokenizer_source: base``).
Parameter values are scalars or mergekit's filter lists (``[{filter: mlp, value: 0.3}, {value: 0.5}]``,
first substring match wins); gradients (lists of numbers) are rejected with a clear error.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from micota.config import StageConfig, load_yaml
from micota.errors import UserError

DType = Literal["float32", "bfloat16", "float16", "float64"]
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}


class InputModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="Model folder (or hub id / alias).")
    parameters: dict[str, Any] = Field(default_factory=dict, description="Per-model parameters (weight, density, ...).")


class MergeConfig(StageConfig):
    method: str = Field("dare_ties", description="Merge method: linear, task_arithmetic, ties, dare_ties, dare_linear, breadcrumbs, breadcrumbs_ties, della, della_linear, slerp.")
    base: str | None = Field(None, description="Base model folder; task vectors are model − base.")
    models: list[InputModel] = Field(default_factory=list, description="Models to merge, each {model, parameters}.")
    parameters: dict[str, Any] = Field(default_factory=dict, description="Global parameters (per-model ones win).")
    dtype: DType | None = Field(None, description="Compute dtype (default: the inputs' promoted dtype).")
    out_dtype: DType | None = Field(None, description="Output dtype (default: the compute dtype).")
    seed: int = Field(0, description="Seed for random masks (dare_*, della*).")
    threads: int = Field(0, description="Tensors merged in parallel (0 = number of CPUs, at most 4).")
    shard_size: str = Field("5GB", description="Maximum output shard size in bytes (suffixes K, M, G, e.g. 5GB, 100M).")
    max_bytes_in_flight: str = Field("512MB", description="Memory bound for tensors being merged at once (a bigger tensor runs alone).")
    mergekit_compatible: bool = Field(False, description="Replay mergekit's random stream and tie-breaking (sequential; byte-identical to mergekit-yaml --random-seed N -j 1).")
    embed_policy: Literal["error", "truncate", "pad"] = Field("error", description="Vocabulary-size mismatch: error, truncate to the smallest, or pad to the largest.")
    allow_pickle: bool = Field(False, description="Allow pickle .bin checkpoints (they can run code on load).")
    tokenizer_source: Literal["base"] | None = Field("base", description="Tokenizer copied into the output (only 'base').")
    out: Path | None = Field(None, description="Output model folder.")
    overwrite: bool = Field(False, description="Replace an existing output folder.")

    @classmethod
    def two_model(cls, base: str | os.PathLike, finetuned: str | os.PathLike, *, method: str = "dare_ties",
                  weight: float | None = 1.0, density: float | None = None, seed: int = 0,
                  out: str | os.PathLike | None = None, parameters: dict[str, Any] | None = None,
                  **kwargs: Any) -> "MergeConfig":
        """The MiCoTA case: one fine-tune merged onto its own base (``--base``/``--finetuned`` on the CLI).

        ``weight`` w is the fine-tune's share for every method:

        - task-vector methods (task_arithmetic, ties, dare_*, breadcrumbs*, della*): ``b + w·S(δ)``,
          δ = fine-tune − base (``weight`` of the fine-tune, as in their mergekit YAML);
        - ``linear``: ``(1−w)·base + w·fine-tune`` — the YAML ``models: [{base, weight: 1−w},
          {fine-tune, weight: w}]``;
        - ``slerp``: ``t = w`` (t = 0 is the base, t = 1 the fine-tune).

        ``parameters`` are further per-model parameters (``gamma``, ``epsilon``); ``density`` does not
        apply to linear or slerp. ``weight=None`` leaves the weight unset (an error for methods needing it).
        """
        base_s, ft_s = os.fspath(base), os.fspath(finetuned)
        params: dict[str, Any] = {k: v for k, v in (parameters or {}).items() if v is not None}
        if method in ("linear", "slerp"):
            extra = sorted(params) + (["density"] if density is not None else [])
            if extra:
                raise UserError(f"{method}: parameter '{extra[0]}' does not apply (two-model {method} takes only --weight)")
            if weight is None:
                raise UserError(f"{method}: --weight is required (the fine-tune's share, 0 = base, 1 = fine-tune)")
            if not 0 <= weight <= 1:
                raise UserError(f"{method}: weight must be in [0, 1] (the fine-tune's share), got {weight}")
            if method == "linear":
                models = [{"model": base_s, "parameters": {"weight": 1 - weight}},
                          {"model": ft_s, "parameters": {"weight": weight}}]
                shared: dict[str, Any] = {}
            else:
                models, shared = [{"model": ft_s, "parameters": {}}], {"t": weight}
            return cls.build({"method": method, "base": base_s, "seed": seed, "models": models, "parameters": shared,
                              "out": os.fspath(out) if out is not None else None, **kwargs})
        if weight is not None:
            params["weight"] = weight
        if density is not None:
            params["density"] = density
        return cls.build({"method": method, "base": base_s, "seed": seed,
                          "models": [{"model": ft_s, "parameters": params}],
                          "out": os.fspath(out) if out is not None else None, **kwargs})


_MK_KEYS = {"merge_method", "base_model", "models", "parameters", "dtype", "out_dtype", "tokenizer_source"}


def _model_ref(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("model"), (str, dict)):
        inner = value["model"]
        return inner if isinstance(inner, str) else _model_ref(inner.get("path"), where)
    raise UserError(f"{where}: expected a model path")


def from_mergekit_yaml(path: str | os.PathLike, **overrides: Any) -> MergeConfig:
    """mergekit YAML -> :class:`MergeConfig`. Unsupported keys are an error naming the key."""
    data = load_yaml(path)
    for key in data:
        if key not in _MK_KEYS:
            raise UserError(f"{path}: {key}: not supported by micota merge (supported: {', '.join(sorted(_MK_KEYS))})")
    if "merge_method" not in data:
        raise UserError(f"{path}: merge_method: required")
    models = []
    for i, m in enumerate(data.get("models") or []):
        if not isinstance(m, dict) or "model" not in m:
            raise UserError(f"{path}: models[{i}]: expected {{model: ..., parameters: ...}}")
        models.append({"model": _model_ref(m["model"], f"{path}: models[{i}].model"), "parameters": m.get("parameters") or {}})
    tok = data.get("tokenizer_source")
    if tok not in (None, "base"):
        raise UserError(f"{path}: tokenizer_source: only 'base' is supported, got {tok!r}")
    cfg: dict[str, Any] = {
        "method": data["merge_method"],
        "base": _model_ref(data["base_model"], f"{path}: base_model") if data.get("base_model") else None,
        "models": models,
        "parameters": data.get("parameters") or {},
        "dtype": _norm_dtype(data.get("dtype")),
        "out_dtype": _norm_dtype(data.get("out_dtype")),
    }
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return MergeConfig.build(cfg, prefix=str(path))


def _norm_dtype(v: Any) -> Any:
    return _DTYPE_ALIASES.get(v, v) if isinstance(v, str) else v


def parse_size(text: str | int) -> int:
    """'5GB' / '100M' / '1.5G' / 12345 -> bytes (K, M, G, T powers of 1000; KiB-style powers of 1024)."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(I?B?)\s*", str(text).upper())
    if not m:
        raise UserError(f"invalid size {text!r} (use e.g. 5GB, 100M, 2GiB)")
    base = 1024 if m.group(3).startswith("I") else 1000
    return int(float(m.group(1)) * base ** " KMGT".index(m.group(2) or " "))


def resolve_setting(setting: Any, tensor_name: str, what: str) -> Any:
    """A mergekit parameter setting for one tensor: scalar, or filter list (first match wins)."""
    if isinstance(setting, (bool, int, float, str)) or setting is None:
        return setting
    if isinstance(setting, dict):
        setting = [setting]
    if isinstance(setting, list) and all(isinstance(c, dict) for c in setting):
        for cond in setting:
            if "value" not in cond or set(cond) - {"value", "filter"}:
                raise UserError(f"{what}: each filter entry needs 'value' (and optional 'filter')")
            f = cond.get("filter")
            if f in (None, "*") or f in tensor_name:
                return resolve_setting(cond["value"], tensor_name, what)
        return None
    raise UserError(f"{what}: gradient (list) parameter values are not supported by micota merge; use a scalar or filters")
