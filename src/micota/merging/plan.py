"""Everything checked before one output byte is written: inputs, parameters, tensors, vocab, ties.

:func:`make_plan` opens every input lazily (headers only), then checks: same architecture; the same
tensor names (a missing or extra tensor is named); the same shapes, except vocabulary rows, whose
mismatch is an error naming both sizes unless ``embed_policy`` is ``truncate`` (smallest) or ``pad``
(largest; rows an input lacks are taken from the largest input, so they carry no task vector);
tied vs untied ``lm_head`` (a tied input lends its embedding as ``lm_head``; the output is tied only
if every input is); integer/bool tensors identical in every input; every parameter valid for every
tensor (``density`` in (0, 1], ``weight`` given, no unknown names).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from micota.errors import UserError
from micota.io import read_json
from micota.merging.config import MergeConfig, resolve_setting
from micota.merging.methods import METHODS, MISSING, MethodSpec
from micota.merging.tensorio import ModelWeights
from micota.models import resolve_model

LM_HEAD = "lm_head.weight"
_VOCAB_SUFFIXES = ("embed_tokens.weight", "lm_head.weight", "wte.weight", "embed_in.weight", "embed_out.weight",
                   "word_embeddings.weight")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


@dataclass
class Input:
    label: str  # "base" or the model spec as given
    folder: Path
    weights: ModelWeights
    config: dict[str, Any]
    tied: bool


@dataclass
class TensorPlan:
    name: str
    keys: list[str]  # tensor name to read in each input (a tied lm_head reads the embedding)
    shape: tuple[int, ...]  # output shape
    rows: int | None  # vocabulary rows of the output when this is a vocabulary tensor
    merge: bool  # False: integer/bool tensor copied from the base
    work: torch.dtype  # compute dtype (config dtype, else the inputs' promoted dtype, as mergekit)
    out: torch.dtype
    per_model: list[dict[str, Any]] = field(default_factory=list)
    shared: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    spec: MethodSpec
    inputs: list[Input]  # inputs[0] is the base (when the method has one); then the models
    has_base: bool
    tensors: list[TensorPlan]  # sorted by name
    tied_out: bool
    vocab_out: int | None
    task_vector: tuple[int, int] | None = None  # (base, fine-tune) input indices of a two-model merge


def _local(spec: str, allow_pickle: bool) -> Path:
    path = resolve_model(spec, allow_pickle=allow_pickle)
    p = Path(path)
    if p.is_dir():
        return p
    try:  # hub id: fetch weights + config + tokenizer files only
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(path, allow_patterns=["*.safetensors", "*.json", "*.model", "*.txt", "*.jinja"]))
    except Exception as e:  # noqa: BLE001 - offline / unknown repo is bad input
        raise UserError(f"{spec}: cannot fetch model from the hub ({type(e).__name__})") from None


def _open(label: str, spec: str, allow_pickle: bool) -> Input:
    folder = _local(spec, allow_pickle)
    weights = ModelWeights(folder, allow_pickle=allow_pickle)
    config = read_json(folder / "config.json")
    tied = LM_HEAD not in weights or bool(config.get("tie_word_embeddings", False))
    return Input(label, folder, weights, config, tied)


def _embed_name(names: set[str]) -> str | None:
    cands = sorted(n for n in names if n.endswith(("embed_tokens.weight", "wte.weight", "embed_in.weight", "word_embeddings.weight")))
    return cands[0] if cands else None


def _resolve_params(cfg: MergeConfig, spec: MethodSpec, model_params: list[dict[str, Any]], name: str,
                    labels: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    per_model = []
    for label, mp in zip(labels, model_params):
        vals = {}
        for key, default in spec.per_model.items():
            raw = resolve_setting(mp.get(key, cfg.parameters.get(key)), name, f"{label}: {key}")
            if raw is None:
                if default is MISSING:
                    raise UserError(f"{spec.name}: parameter '{key}' missing for model {label}")
                raw = default
            vals[key] = _number(raw, f"{label}: {key}")
        if "density" in vals and not 0 < vals["density"] <= 1:
            raise UserError(f"{label}: density must be in (0, 1], got {vals['density']}")
        if "epsilon" in vals and vals["density"] < 1 and not (0 < vals["density"] - vals["epsilon"] and vals["density"] + vals["epsilon"] < 1):
            raise UserError(f"{label}: epsilon {vals['epsilon']} must keep density ± epsilon inside (0, 1)")
        per_model.append(vals)
    shared = {}
    for key, default in spec.shared.items():
        raw = resolve_setting(cfg.parameters.get(key), name, key)
        if raw is None:
            if default is MISSING:
                raise UserError(f"{spec.name}: parameter '{key}' is required")
            raw = default
        shared[key] = raw if isinstance(default, bool) else _number(raw, key)
    return per_model, shared


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        try:
            return float(v)
        except (TypeError, ValueError):
            raise UserError(f"{what}: expected a number, got {v!r}") from None
    return float(v)


def make_plan(cfg: MergeConfig) -> Plan:
    spec = METHODS.get(cfg.method)
    if spec is None:
        raise UserError(f"unknown merge method {cfg.method!r} (known: {', '.join(sorted(METHODS))})")
    known = set(spec.per_model) | set(spec.shared)
    for where, params in [("parameters", cfg.parameters)] + [(m.model, m.parameters) for m in cfg.models]:
        for key in params:
            if key not in known:
                raise UserError(f"{where}: unknown parameter '{key}' for {spec.name} (known: {', '.join(sorted(known))})")
    if spec.needs_base and not cfg.base:
        raise UserError(f"{spec.name} needs a base model (base / base_model)")
    same = (lambda a, b: os.path.realpath(a) == os.path.realpath(b))
    entries = [(m.model, m.parameters) for m in cfg.models]
    if cfg.base and spec.needs_base:
        entries = [e for e in entries if not same(e[0], cfg.base)]
    elif cfg.base and not any(same(e[0], cfg.base) for e in entries):
        entries.append((cfg.base, {}))
    lo, hi = spec.n_models
    if len(entries) < lo or (hi is not None and len(entries) > hi):
        want = f"exactly {lo}" if lo == hi else f"at least {lo}"
        raise UserError(f"{spec.name} needs {want} model(s) besides the base, got {len(entries)}")
    has_base = spec.needs_base
    inputs = ([_open("base", cfg.base, cfg.allow_pickle)] if has_base else []) + [
        _open(spec_, spec_, cfg.allow_pickle) for spec_, _ in entries]
    model_params = [p for _, p in entries]
    labels = [s for s, _ in entries]

    ref = inputs[0]
    for inp in inputs[1:]:
        a, b = ref.config.get("architectures"), inp.config.get("architectures")
        if (a, ref.config.get("model_type")) != (b, inp.config.get("model_type")):
            raise UserError(f"architecture mismatch: {ref.label} is {a}, {inp.label} is {b}")

    tied_out = all(i.tied for i in inputs)
    all_names = [set(i.weights.infos) - {LM_HEAD} for i in inputs]
    for inp, names in zip(inputs[1:], all_names[1:]):
        missing, extra = sorted(all_names[0] - names), sorted(names - all_names[0])
        if missing:
            raise UserError(f"model {inp.label} lacks tensor {missing[0]} (present in {ref.label})")
        if extra:
            raise UserError(f"model {inp.label} has tensor {extra[0]} that {ref.label} lacks")
    embed = _embed_name(all_names[0])
    names = sorted(all_names[0] | ({LM_HEAD} if not tied_out else set()))
    if not tied_out and embed is None:
        raise UserError(f"{ref.label}: cannot tie lm_head: no embedding tensor found")

    forced = DTYPES[cfg.dtype] if cfg.dtype else None

    tensors, vocab_out = [], None
    for name in names:
        keys = [(embed if (name == LM_HEAD and i.tied) else name) for i in inputs]
        infos = [i.weights.infos[k] for i, k in zip(inputs, keys)]
        shapes = [x.shape for x in infos]
        rows = None
        if len(set(shapes)) > 1:
            vocab_like = name.endswith(_VOCAB_SUFFIXES) and len({s[1:] for s in shapes}) == 1
            if not vocab_like:
                j = next(k for k, s in enumerate(shapes) if s != shapes[0])
                raise UserError(f"shape mismatch for tensor {name}: {inputs[0].label} {tuple(shapes[0])} vs {inputs[j].label} {tuple(shapes[j])}")
            sizes = [s[0] for s in shapes]
            if cfg.embed_policy == "error":
                j = next(k for k, s in enumerate(sizes) if s != sizes[0])
                raise UserError(f"vocabulary size mismatch: {inputs[0].label} has {sizes[0]} rows in {name}, {inputs[j].label} has {sizes[j]} (use --embed-policy truncate or pad)")
            rows = min(sizes) if cfg.embed_policy == "truncate" else max(sizes)
            vocab_out = rows
        fp = [x.dtype.is_floating_point for x in infos]
        if not all(fp) and any(fp):
            raise UserError(f"dtype mismatch for tensor {name}: {[str(x.dtype) for x in infos]}")
        work = (forced or _promote([x.dtype for x in infos])) if all(fp) else infos[0].dtype
        out = DTYPES[cfg.out_dtype] if cfg.out_dtype and all(fp) else work
        t = TensorPlan(name, keys, (rows,) + tuple(shapes[0][1:]) if rows else tuple(shapes[0]), rows, all(fp), work, out)
        if not t.merge:
            first = inputs[0].weights.read(keys[0])
            for inp, k in zip(inputs[1:], keys[1:]):
                if not torch.equal(first, inp.weights.read(k)):
                    raise UserError(f"integer/bool tensor {name} differs between {inputs[0].label} and {inp.label}; cannot merge it")
        else:
            t.per_model, t.shared = _resolve_params(cfg, spec, model_params, name, labels)
        tensors.append(t)
    tv = None
    if cfg.base and len(inputs) == 2:  # a two-model merge: ‖θ_base‖ and ‖θ_ft − θ_base‖ go in the report
        bi = 0 if has_base else next(i for i, s in enumerate(labels) if same(s, cfg.base))
        tv = (bi, 1 - bi)
    return Plan(spec, inputs, has_base, tensors, tied_out, vocab_out, tv)


def _promote(dtypes: list[torch.dtype]) -> torch.dtype:
    out = dtypes[0]
    for d in dtypes[1:]:
        out = torch.promote_types(out, d)
    return out
