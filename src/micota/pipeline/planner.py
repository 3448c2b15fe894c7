"""Plan a pipeline: expand stages, resolve references, key every output directory, decide what runs.

Cache key of a stage instance (12 hex of sha256 over canonical JSON)::

    key = H(kind, resolved config without its output field and with every upstream directory
            written as ${stage}, {upstream stage: its key}, {external input path: fingerprint},
            micota version)

Its output directory is ``OUT/<instance>-<key>``. Keys depend only on declarations, never on
outputs, so the whole plan is known before anything runs, and changing one parameter changes the
key of that stage and (through ``{upstream: key}``) of everything downstream, nothing else.

Status: ``cached`` (complete manifest: skipped), ``resume`` (directory exists without a complete
manifest: the stage resumes from what it wrote), ``run``. The reason for ``run`` compares against the
state recorded by the last successful run of that instance (``OUT/.pipeline/state/*.json``):
never run / config changed (which keys) / input changed (which stage or file) / version changed.

Paths: a relative input path in a pipeline file (``data:``, a stage key, ``launcher.config_file``)
is relative to **the pipeline file's directory**, not the current directory, so a recipe runs the
same from anywhere; ``out:`` (the output root) is relative to the current directory. A string is
taken as a path when it starts with ``./``, ``../``, ``/`` or ``~``, ends in a file suffix
(``.jsonl``, ``.json``, ``.yaml``, ``.jinja``, ``.gguf``, …), or names something that exists next
to the pipeline file; anything else (``gsm8k``, ``Qwen/Qwen2.5-7B-Instruct``) is a name.
:func:`check_plan` fails the plan — dry run included — when an input file or directory is missing,
or when a stage that will run needs an optional extra (``vllm``, ``deepspeed``) that is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from micota import __version__
from micota.config import StageConfig
from micota.errors import UserError
from micota.io import dumps_canonical, read_json, sha256_text, visible_files
from micota.manifest import is_complete
from micota.progress import sha256_files
from micota.pipeline.schema import REF, LauncherSpec, PipelineSpec, StageSpec
from micota.pipeline.stages import StageKind, get_stage_kind

STATE_DIR = ".pipeline/state"


@dataclass
class Instance:
    name: str  # "stage" or "stage.variant"
    stage: StageSpec
    variant: str | None
    fields: dict[str, Any]  # config fields after text substitution (stage refs still ${...})
    origin: dict[str, str]  # field -> YAML key path (for error messages)
    deps: list[str] = field(default_factory=list)
    dep_keys: dict[str, str] = field(default_factory=dict)
    kind: StageKind | None = None
    key: str = ""
    dir: Path = Path()
    config: StageConfig | None = None
    view: dict[str, Any] = field(default_factory=dict)
    external: dict[str, str] = field(default_factory=dict)
    status: str = ""  # cached | resume | run
    reason: str = ""
    launcher: LauncherSpec | None = None


@dataclass
class Plan:
    spec: PipelineSpec
    out: Path
    instances: list[Instance]  # topological order

    def get(self, name: str) -> Instance:
        for i in self.instances:
            if i.name == name:
                return i
        raise UserError(f"no stage instance named {name!r}")

    def select(self, name: str) -> list[Instance]:
        """Instances of a stage (``student_sft`` -> all its variants) or one instance."""
        got = [i for i in self.instances if i.name == name or i.stage.name == name]
        if not got:
            raise UserError(f"no stage named {name!r} (stages: {', '.join(s.name for s in self.spec.stages)})")
        return got

    def table(self) -> str:
        w = max(len(i.name) for i in self.instances)
        lines = [f"{'stage':<{w}}  {'kind':<12}  {'status':<6}  reason", "-" * (w + 40)]
        for i in self.instances:
            lines.append(f"{i.name:<{w}}  {i.stage.kind:<12}  {i.status:<6}  {i.reason}  [{i.dir.name}]")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- substitution
def _walk(value: Any, fn) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: _walk(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, fn) for v in value]
    return value


def _text_subst(spec: PipelineSpec, variant: str | None, where: str):
    tables = {"models": spec.models, "data": spec.data, "vars": {k: str(v) for k, v in spec.vars.items()}}

    def sub(s: str, depth: int = 0) -> str:
        if depth > 8:
            raise UserError(f"{where}: references nest too deeply (a cycle in models/data?)")

        def one(m: re.Match) -> str:
            ref = m.group(1).strip()
            head, _, tail = ref.partition(".")
            if head in tables:
                if tail not in tables[head]:
                    raise UserError(f"{where}: unknown reference ${{{ref}}} (no {head}.{tail})")
                return sub(tables[head][tail], depth + 1)
            if ref == "variant" or ref == "variant_name":
                if variant is None:
                    raise UserError(f"{where}: ${{{ref}}} is only defined in a stage with 'foreach: variants'")
                return variant if ref == "variant_name" else sub(spec.variants[variant], depth + 1)
            return m.group(0)

        return REF.sub(one, s)

    return sub


def _expand(spec: PipelineSpec) -> list[Instance]:
    out: list[Instance] = []
    for st in spec.stages:
        variants = list(spec.variants) if st.foreach == "variants" else [None]
        for v in variants:
            fields: dict[str, Any] = {}
            origin: dict[str, str] = {}
            for group, prefix in ((st.params, f"stages.{st.name}"), (st.inputs, f"stages.{st.name}.inputs")):
                for k, val in group.items():
                    where = f"{prefix}.{k}"
                    whole = REF.fullmatch(val.strip()) if isinstance(val, str) else None
                    var = whole.group(1).strip().removeprefix("vars.") if whole and whole.group(1).strip().startswith("vars.") else None
                    if var is not None and var in spec.vars:  # a whole-value variable keeps its type
                        fields[k] = spec.vars[var]
                    else:
                        fields[k] = _walk(val, _text_subst(spec, v, where))
                    origin[k] = where
            out.append(Instance(f"{st.name}.{v}" if v else st.name, st, v, fields, origin))
    return out


def _resolve_stage_refs(inst: Instance, by_stage: dict[str, list[Instance]], dirs: dict[str, str] | None) -> dict[str, Any]:
    """Replace ${stage...} references by directories (or, with ``dirs=None``, only collect deps)."""
    deps: list[str] = []

    def target(ref: str, where: str) -> str:
        head, _, tail = ref.partition(".")
        if head not in by_stage:
            raise UserError(f"{where}: unknown reference ${{{ref}}} (no stage, models or data entry named {head!r})")
        insts = by_stage[head]
        if tail:
            name = f"{head}.{tail}"
            if name not in {i.name for i in insts}:
                raise UserError(f"{where}: unknown reference ${{{ref}}} (stage {head!r} has no variant {tail!r})")
            return name
        if insts[0].variant is None:
            return head
        if inst.variant is not None:
            return f"{head}.{inst.variant}"
        raise UserError(f"{where}: ${{{head}}} has one instance per variant: use ${{{head}.VARIANT}} or ${{{head}.*}}")

    def resolve(value: Any, where: str) -> Any:
        if isinstance(value, str):
            m = re.fullmatch(r"\$\{([^}.]+)\.\*\}", value.strip())
            if m:
                head = m.group(1)
                if head not in by_stage or by_stage[head][0].variant is None:
                    raise UserError(f"{where}: ${{{head}.*}} needs a stage with 'foreach: variants'")
                deps.extend(i.name for i in by_stage[head])
                return {i.variant: (dirs[i.name] if dirs else i.name) for i in by_stage[head]}

            def one(mm: re.Match) -> str:
                name = target(mm.group(1).strip(), where)
                deps.append(name)
                return dirs[name] if dirs else mm.group(0)

            return REF.sub(one, value)
        if isinstance(value, dict):
            return {k: resolve(v, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v, f"{where}.{j}") for j, v in enumerate(value)]
        return value

    resolved = {k: resolve(v, inst.origin[k]) for k, v in inst.fields.items()}
    for a in inst.stage.after:
        if a not in by_stage:
            raise UserError(f"stages.{inst.stage.name}.after: no stage named {a!r}")
        deps.extend(i.name for i in by_stage[a])
    inst.deps = sorted(set(deps), key=deps.index)
    return resolved


def _toposort(insts: list[Instance]) -> list[Instance]:
    by_name = {i.name: i for i in insts}
    order: list[Instance] = []
    state: dict[str, int] = {}

    def visit(i: Instance, stack: list[str]) -> None:
        if state.get(i.name) == 2:
            return
        if state.get(i.name) == 1:
            raise UserError(f"stages.{i.stage.name}: dependency cycle ({' -> '.join(stack + [i.name])})")
        state[i.name] = 1
        for d in i.deps:
            visit(by_name[d], stack + [i.name])
        state[i.name] = 2
        order.append(i)

    for i in insts:
        visit(i, [])
    return order


# ----------------------------------------------------------------------------- fingerprints
def fingerprint(path: Path, cache: dict[str, str]) -> str:
    """Content hash of a file or directory: every file's sha256 (large files once, then from the digest
    cache of :func:`micota.io.sha256_file` until they change — a same-size copy with its mtime kept,
    ``cp -p``, is a change)."""
    k = str(path)
    if k in cache:
        return cache[k]
    files = [path] if path.is_file() else visible_files(path)
    digests = sha256_files(files)
    parts = [f"{f.relative_to(path) if f != path else ''}\0{digests[f]}" for f in files]
    cache[k] = sha256_text("\n".join(parts))[:16]
    return cache[k]


def _external_paths(value: Any, out_prefix: str) -> list[str]:
    found: list[str] = []

    def visit(v: Any) -> None:
        if isinstance(v, str):
            if v and out_prefix not in v and len(v) < 4096 and os.path.exists(v):
                found.append(v)
        elif isinstance(v, dict):
            for x in v.values():
                visit(x)
        elif isinstance(v, list):
            for x in v:
                visit(x)

    visit(value)
    return sorted(set(found))


# ----------------------------------------------------------------------------- input paths and checks
_FILE_SUFFIXES = (".jsonl", ".json", ".yaml", ".yml", ".jinja", ".gguf", ".safetensors", ".txt", ".csv", ".parquet")


def _is_path_like(s: str) -> bool:
    return s.startswith(("./", "../", "/", "~")) or s.lower().endswith(_FILE_SUFFIXES)


def _resolve_paths(value: Any, base: Path, where: str, missing: dict[str, list[str]]) -> Any:
    """Relative path-like strings -> paths under ``base``; missing path-like inputs are collected."""
    def visit(v: Any, w: str) -> Any:
        if isinstance(v, dict):
            return {k: visit(x, f"{w}.{k}") for k, x in v.items()}
        if isinstance(v, list):
            return [visit(x, f"{w}.{j}") for j, x in enumerate(v)]
        if not isinstance(v, str) or not v or "${" in v or "\n" in v or len(v) > 1024:
            return v
        p = Path(v).expanduser()
        if not p.is_absolute():
            cand = base / p
            if not (_is_path_like(v) or (os.sep in v and cand.exists())):
                return v  # a name: benchmark, alias, hub id
            p = cand
        if not p.exists():
            missing.setdefault(str(p), [])
            if w not in missing[str(p)]:
                missing[str(p)].append(w)
        return str(p)

    return visit(value, where)


def _needs_extras(inst: Instance) -> dict[str, str]:
    """Optional packages the stage needs: {module: why}."""
    cfg, need = inst.config, {}
    if getattr(cfg, "backend", None) == "vllm":
        need["vllm"] = "backend: vllm"
    if getattr(cfg, "deepspeed", None):
        need["deepspeed"] = "deepspeed config"
    lau = inst.launcher
    if lau is not None and lau.type == "accelerate":
        need["accelerate"] = "launcher: accelerate"
        if lau.config_file and Path(lau.config_file).is_file() and "deepspeed" in Path(lau.config_file).read_text(
                encoding="utf-8", errors="replace").lower():
            need["deepspeed"] = f"launcher config {Path(lau.config_file).name}"
    return need


def check_plan(plan: "Plan") -> None:
    """Fail (one line listing every problem) when a stage that will run lacks an optional extra."""
    lacking: dict[str, list[str]] = {}
    for inst in plan.instances:
        if inst.status == "cached":
            continue
        for mod, why in _needs_extras(inst).items():
            if importlib.util.find_spec(mod) is None:
                lacking.setdefault(mod, []).append(f"{inst.name} ({why})")
    if lacking:
        raise UserError("missing optional extras: " + "; ".join(
            f"{mod} for {', '.join(who)} — pip install 'micota[{mod}]'" if mod in ("vllm", "deepspeed")
            else f"{mod} for {', '.join(who)}" for mod, who in lacking.items()))


# ----------------------------------------------------------------------------- planning
def _check_fields(inst: Instance, cls: type[StageConfig], out_field: str) -> None:
    for k in inst.fields:
        if k == out_field:
            raise UserError(f"{inst.origin[k]}: the output directory is set by the pipeline (remove this key)")
        if k not in cls.model_fields:
            raise UserError(f"{inst.origin[k]}: unknown key")


def _state_path(out: Path, name: str) -> Path:
    return out / STATE_DIR / f"{name}.json"


def _why(inst: Instance, out: Path) -> str:
    p = _state_path(out, inst.name)
    if not p.is_file():
        return "missing: never run"
    old = read_json(p)
    if old.get("version") != __version__:
        return f"version changed: {old.get('version')} -> {__version__}"
    if old.get("kind") != inst.stage.kind:
        return f"kind changed: {old.get('kind')} -> {inst.stage.kind}"
    new_cfg, old_cfg = inst.view, old.get("config", {})
    changed = sorted(k for k in set(new_cfg) | set(old_cfg) if dumps_canonical(new_cfg.get(k)) != dumps_canonical(old_cfg.get(k)))
    if changed:
        return "config changed: " + ", ".join(changed)
    old_deps = old.get("deps", {})
    moved = [d for d in inst.deps if old_deps.get(d) != inst.dep_keys.get(d)]
    if moved:
        return "input changed: " + ", ".join(moved)
    ext = [p for p in inst.external if old.get("external", {}).get(p) != inst.external[p]]
    if ext:
        return "input file changed: " + ", ".join(ext)
    return "output missing"


def make_plan(spec: PipelineSpec, out: str | os.PathLike | None = None, *, check_extras: bool = True) -> Plan:
    """Expand, validate every stage config against its kind and compute keys and status; with
    ``check_extras`` (default) a stage that will run without its optional extra fails the plan."""
    root = out or spec.out
    if not root:
        raise UserError("no output directory: pass --out DIR or set 'out:' in the pipeline file")
    out_dir = Path(root)
    out_prefix = str(out_dir) + os.sep
    base = Path(spec.source).resolve().parent if spec.source else Path.cwd()
    missing: dict[str, list[str]] = {}  # path -> where it is used
    insts = _expand(spec)
    for i in insts:
        i.fields = {k: _resolve_paths(v, base, i.origin[k], missing) for k, v in i.fields.items()}
    launchers = {"launcher": spec.launcher, **{f"stages.{st.name}.launcher": st.launcher for st in spec.stages}}
    for where, lau in launchers.items():
        if lau is not None and lau.config_file:
            lau.config_file = _resolve_paths(lau.config_file, base, f"{where}.config_file", missing)
    if missing:
        raise UserError(f"{len(missing)} input path{'s' if len(missing) > 1 else ''} not found (relative paths are "
                        f"relative to the pipeline file's directory {base}): "
                        + "; ".join(f"{p} (used by {', '.join(w[:3])}{', …' if len(w) > 3 else ''})" for p, w in missing.items()))
    by_stage: dict[str, list[Instance]] = {}
    for i in insts:
        by_stage.setdefault(i.stage.name, []).append(i)
    for i in insts:
        _resolve_stage_refs(i, by_stage, None)
    order = _toposort(insts)
    dirs: dict[str, str] = {}
    fp_cache: dict[str, str] = {}
    keys: dict[str, str] = {}
    for inst in order:
        inst.kind = get_stage_kind(inst.stage.kind)
        cls, _ = inst.kind.load()
        out_field = inst.kind.out_field()
        _check_fields(inst, cls, out_field)
        resolved = _resolve_stage_refs(inst, by_stage, dirs)
        placeholder = str(out_dir / f"{inst.name}-pending")
        cfg = cls.build({**resolved, out_field: placeholder}, prefix=f"stages.{inst.stage.name}")
        text = json.dumps(cfg.model_dump(mode="json", exclude={out_field}), sort_keys=True)
        for d in inst.deps:  # upstream directories -> ${stage}, so the view is location-free
            text = text.replace(json.dumps(dirs[d])[1:-1], "${" + d + "}")
        inst.view = json.loads(text)
        inst.external = {p: fingerprint(Path(p), fp_cache) for p in _external_paths(inst.view, out_prefix)}
        inst.dep_keys = {d: keys[d] for d in inst.deps}
        inst.key = sha256_text(dumps_canonical({
            "kind": inst.stage.kind, "config": inst.view, "deps": inst.dep_keys,
            "external": inst.external, "version": __version__, **({"threads": spec.threads} if spec.threads else {}),
        }))[:12]
        keys[inst.name] = inst.key
        inst.dir = out_dir / f"{inst.name}-{inst.key}"
        dirs[inst.name] = str(inst.dir)
        inst.config = cls.build({**resolved, out_field: str(inst.dir)}, prefix=f"stages.{inst.stage.name}")
        inst.launcher = inst.stage.launcher or (spec.launcher if inst.kind.launchable else None)
        if inst.launcher and inst.launcher.type != "python" and not inst.kind.launchable:
            raise UserError(f"stages.{inst.stage.name}.launcher: kind {inst.stage.kind!r} cannot run under a launcher")
        if is_complete(inst.dir):
            inst.status, inst.reason = "cached", "complete manifest"
        elif inst.dir.exists():
            inst.status, inst.reason = "resume", "incomplete output: resumes"
        else:
            inst.status, inst.reason = "run", _why(inst, out_dir)
    plan = Plan(spec, out_dir, order)
    if check_extras:
        check_plan(plan)
    return plan


def state_record(inst: Instance) -> dict[str, Any]:
    """What the runner records after a stage instance completes (read by the next plan's reasons)."""
    return {"key": inst.key, "kind": inst.stage.kind, "config": inst.view, "deps": inst.dep_keys,
            "external": inst.external, "version": __version__, "dir": inst.dir.name}
