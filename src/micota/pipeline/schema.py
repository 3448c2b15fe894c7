"""The pipeline file: models, data, variants and stages, validated with the YAML key named.

::

    name: miniature
    out: runs/miniature              # default output root (``micota run --out`` wins)
    vars:   {seed: 0}                # typed values; `micota run --var seed=1` (or `micota demo --seed 1`) overrides
    models: {student: "${pretrain}/student"}
    data:   {train: "${world}/problems/train.jsonl"}
    variants: {long: "${teacher_filter}", mid: "${mid_filter}"}
    launcher: {type: accelerate, config_file: ..., num_processes: 8}   # default for train stages
    threads: 2                       # pin torch's intra-op threads: float sums, hence trained weights, depend on it
    stages:
      teacher_filter: {kind: filter, inputs: {samples: "${teacher_gen}"}, max_tokens: 16000}
      student_sft:    {kind: train, foreach: variants, inputs: {data: "${variant}", base: "${models.student}"}}
      student_eval:   {kind: eval, foreach: variants, inputs: {model: "${student_sft}"}}

A stage has reserved keys ``kind``, ``inputs`` (config fields that reference other stages),
``foreach`` (``variants``: one instance per variant, named ``stage.variant``), ``launcher``,
``after`` (extra ordering dependencies) and ``resources`` (what a Slurm job of it asks for, with
the top-level ``slurm:`` block: :mod:`micota.pipeline.resources`); every other key is a field of
the kind's config class.
``stages`` may also be a list of mappings with a ``name`` key.

References (resolved by :mod:`micota.pipeline.planner`):
``${vars.X}`` (a value that is exactly the reference keeps the variable's type; inside a longer string
it is text), ``${models.X}``, ``${data.X}`` (text substitution), ``${variant}`` / ``${variant_name}`` (in a
``foreach`` stage), ``${stage}`` or ``${stage}/sub/path`` (that stage's output directory; inside a
``foreach`` stage a ``foreach`` stage resolves to the same variant's instance),
``${stage.variant}`` (one instance) and a whole value ``${stage.*}`` (mapping variant -> directory).

Names are names: stage, variant, model and data names match :data:`NAME` (letters, digits, ``_``,
``-`` and ``.``, not leading; no ``..``), because they become directory names under ``out:``.

Launcher ``args`` are limited to the launcher's own options (:data:`LAUNCHER_OPTIONS`: rendezvous,
node counts, ports, config file); any other argument — ``--no-python``, a program, ``-m`` — could
run arbitrary code and is refused unless the user passes ``--allow-launcher-args``
(:func:`check_launcher_args`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from micota.config import format_validation_error, load_yaml
from micota.errors import UserError
from micota.pipeline.resources import Resources, SlurmSettings

RESERVED = ("kind", "inputs", "foreach", "launcher", "after", "description", "name", "resources")
REF = re.compile(r"\$\{([^}]+)\}")
NAME = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,99}$")
NAME_RULE = "letters, digits, '_', '-' or '.' (not leading, no '..'), at most 100 characters"

# option -> takes a value. Long options may be spelled with '-' or '_' and as --opt=value.
_TORCHRUN = {
    "nnodes": True, "nproc-per-node": True, "node-rank": True, "rdzv-backend": True, "rdzv-endpoint": True,
    "rdzv-id": True, "rdzv-conf": True, "master-addr": True, "master-port": True, "local-addr": True,
    "max-restarts": True, "monitor-interval": True, "standalone": False, "start-method": True,
}
_ACCELERATE = {
    "config-file": True, "num-processes": True, "num-machines": True, "machine-rank": True,
    "main-process-ip": True, "main-process-port": True, "rdzv-backend": True, "same-network": False,
    "mixed-precision": True, "multi-gpu": False, "cpu": False, "gpu-ids": True, "use-deepspeed": False,
    "use-fsdp": False, "deepspeed-config-file": True, "zero-stage": True, "deepspeed-multinode-launcher": True,
    "gradient-accumulation-steps": True, "num-cpu-threads-per-process": True, "dynamo-backend": True,
    "max-restarts": True, "monitor-interval": True, "debug": False,
}
LAUNCHER_OPTIONS: dict[str, dict[str, bool]] = {"python": {}, "torchrun": _TORCHRUN, "accelerate": _ACCELERATE}


def check_name(name: str, where: str, what: str = "name") -> str:
    """``name`` if it is a valid stage/variant/model/data name (stage names also have no '.',
    which separates ``stage.variant``)."""
    if not NAME.match(name) or ".." in name or (what == "stage name" and "." in name):
        rule = "letters, digits, '_' or '-', at most 100 characters" if what == "stage name" else NAME_RULE
        raise UserError(f"{where}: {what} {name!r} must be {rule}")
    return name


def check_launcher_args(launcher: "LauncherSpec", where: str) -> None:
    """Refuse a launcher argument that is not one of the launcher's own options (one line naming it)."""
    allowed = LAUNCHER_OPTIONS[launcher.type]
    args = list(launcher.args)
    i = 0
    while i < len(args):
        a = args[i]
        opt, eq, _ = a.partition("=")
        name = opt.lstrip("-").replace("_", "-")
        if not a.startswith("--") or name not in allowed:
            raise UserError(f"{where}.args: {a!r} is not a {launcher.type} option micota allows "
                            f"(allowed: {', '.join('--' + k for k in sorted(allowed)) or 'none'}); "
                            "pass --allow-launcher-args if you trust this pipeline")
        if allowed[name] and not eq:
            if i + 1 >= len(args):
                raise UserError(f"{where}.args: {a} needs a value")
            i += 1
        elif not allowed[name] and eq:
            raise UserError(f"{where}.args: {opt} takes no value")
        i += 1


class LauncherSpec(BaseModel):
    """How a launchable stage (training) is started. ``python``: in the runner's process;
    ``torchrun``/``accelerate``: a subprocess ``<launcher> -m micota.pipeline.exec KIND CONFIG``."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["python", "torchrun", "accelerate"] = Field("python", description="launcher program")
    num_processes: int = Field(1, ge=1, description="processes per machine (GPUs per node)")
    num_machines: int = Field(1, ge=1, description="nodes (multi-node runs also need args for the rendezvous)")
    config_file: str | None = Field(None, description="accelerate config file (e.g. the shipped DeepSpeed ZeRO-3 one)")
    args: list[str] = Field(default_factory=list, description="extra launcher arguments")


class StageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    kind: str
    inputs: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    foreach: Literal["variants"] | None = None
    launcher: LauncherSpec | None = None
    after: list[str] = Field(default_factory=list)
    description: str = ""
    resources: Resources | None = None  # cluster request (``--executor slurm``; see pipeline.resources)


class PipelineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="pipeline name")
    description: str = ""
    out: str | None = Field(None, description="default output root")
    vars: dict[str, str | int | float | bool] = Field(default_factory=dict, description="typed variables, ${vars.X}")
    models: dict[str, str] = Field(default_factory=dict)
    data: dict[str, str] = Field(default_factory=dict)
    variants: dict[str, str] = Field(default_factory=dict)
    launcher: LauncherSpec | None = None
    threads: int | None = Field(None, ge=1, description="torch intra-op threads for every stage (and OMP_NUM_THREADS for the "
                                "stages it starts); results depend on it, so it is part of every stage's key")
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)
    stages: list[StageSpec]
    source: str | None = Field(None, exclude=True)

    def stage(self, name: str) -> StageSpec:
        for s in self.stages:
            if s.name == name:
                return s
        raise UserError(f"no stage named {name!r} (stages: {', '.join(s.name for s in self.stages)})")


def _stage_from_mapping(name: str, body: Any, where: str) -> StageSpec:
    if not isinstance(body, dict):
        raise UserError(f"{where}: expected a mapping with a 'kind' key")
    check_name(name, where, "stage name")
    if "kind" not in body:
        raise UserError(f"{where}.kind: field required")
    reserved = {k: v for k, v in body.items() if k in RESERVED and k != "name"}
    params = {k: v for k, v in body.items() if k not in RESERVED}
    clash = sorted(set(params) & set(reserved.get("inputs") or {}))
    if clash:
        raise UserError(f"{where}.{clash[0]}: given both as a parameter and in inputs")
    try:
        return StageSpec.model_validate({"name": name, **reserved, "params": params})
    except ValidationError as e:
        raise UserError(format_validation_error(e, prefix=where)) from None


def parse_pipeline(data: dict[str, Any], *, source: str | None = None) -> PipelineSpec:
    """Validate a pipeline mapping (stage fields are checked later, against their kind's config)."""
    raw_stages = data.get("stages")
    if raw_stages is None:
        raise UserError("stages: field required")
    stages: list[StageSpec] = []
    if isinstance(raw_stages, dict):
        for name, body in raw_stages.items():
            stages.append(_stage_from_mapping(str(name), body, f"stages.{name}"))
    elif isinstance(raw_stages, list):
        for i, body in enumerate(raw_stages):
            if not isinstance(body, dict) or "name" not in body:
                raise UserError(f"stages.{i}.name: field required")
            stages.append(_stage_from_mapping(str(body["name"]), body, f"stages.{body['name']}"))
    else:
        raise UserError("stages: expected a mapping of stage name -> stage, or a list of stages")
    seen: set[str] = set()
    for s in stages:
        if s.name in seen:
            raise UserError(f"stages.{s.name}: duplicate stage name")
        seen.add(s.name)
    rest = {k: v for k, v in data.items() if k != "stages"}
    try:
        spec = PipelineSpec.model_validate({**rest, "stages": []})
    except ValidationError as e:
        raise UserError(format_validation_error(e)) from None
    spec.stages = stages
    spec.source = source
    for section in ("models", "data", "variants"):
        for key in getattr(spec, section):
            check_name(key, f"{section}.{key}", f"{section[:-1] if section != 'data' else 'data'} name")
    for s in stages:
        if s.foreach == "variants" and not spec.variants:
            raise UserError(f"stages.{s.name}.foreach: the pipeline declares no variants")
    return spec


def load_pipeline(path: str | os.PathLike, *, vars: dict[str, Any] | None = None) -> PipelineSpec:
    """Read a pipeline file; ``vars`` overrides its declared ``vars`` (each must be declared there)."""
    path = Path(path)
    spec = parse_pipeline(load_yaml(path), source=str(path))
    for k, v in (vars or {}).items():
        if k not in spec.vars:
            known = ", ".join(sorted(spec.vars)) or "none"
            raise UserError(f"--var {k}: the pipeline declares no such variable (vars: {known})")
        old = spec.vars[k]
        if isinstance(v, str) and not isinstance(old, str):
            try:
                v = type(old)(v) if not isinstance(old, bool) else v.lower() in ("1", "true", "yes")
            except ValueError:
                raise UserError(f"--var {k}={v}: expected a {type(old).__name__}") from None
        spec.vars[k] = v
    return spec
