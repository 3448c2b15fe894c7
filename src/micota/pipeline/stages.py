"""The registry of stage kinds: each pipeline ``kind`` is one library function and its typed config.

A kind is ``(config class, function)`` named by import path and imported lazily, so a pipeline
file can be validated without loading torch. The function is the same one the CLI subcommand
calls; the pipeline YAML keys of a stage are that config's fields (= the CLI flags).

Extend with :func:`register_stage_kind`, or install a package that declares an entry point in the
``micota.stage_kinds`` group (``name = "module:function"``). A ``module:function`` import path as a
stage's ``kind`` runs code named by the pipeline file, so it is refused unless the user opts in
(``micota run --allow-plugins``, :func:`plugins_allowed`); the config class is then read from the
function's first parameter annotation.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import inspect
import os
import typing
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable, Iterator

from micota.config import StageConfig
from micota.errors import UserError
from micota.io import OUT_FIELDS as _OUT_FIELDS

ENTRY_POINT_GROUP = "micota.stage_kinds"
_ALLOW_PLUGINS: contextvars.ContextVar[bool] = contextvars.ContextVar("micota_allow_plugins", default=False)


PLUGINS_ENV = "MICOTA_ALLOW_PLUGINS"  # carries the user's --allow-plugins to stage child processes


@contextlib.contextmanager
def plugins_allowed(allow: bool = True) -> Iterator[None]:
    """Within the body, a stage ``kind`` may be a ``module:function`` import path (user opt-in);
    child processes started meanwhile (stage executors) inherit the opt-in."""
    token = _ALLOW_PLUGINS.set(allow)
    old = os.environ.pop(PLUGINS_ENV, None)
    if allow:
        os.environ[PLUGINS_ENV] = "1"
    try:
        yield
    finally:
        _ALLOW_PLUGINS.reset(token)
        os.environ.pop(PLUGINS_ENV, None)
        if old is not None:
            os.environ[PLUGINS_ENV] = old


@dataclass(frozen=True)
class StageKind:
    """One stage kind. ``config``/``fn`` are ``module:attr`` paths; ``launchable`` kinds may run
    under a multi-process launcher (accelerate, torchrun); ``loads_model`` kinds run in a child
    process under the ``local`` executor (see :mod:`micota.pipeline.executors`). A kind with ``split``
    (``module:function`` finishing a split output) may run as N tasks, e.g. Slurm array tasks
    (``resources: {array: N}``): its config has ``tasks``/``task`` fields, task K runs the stage with
    ``task=K`` and ``split(config)`` writes the stage's manifest once all are complete."""

    name: str
    config: str
    fn: str
    launchable: bool = False
    description: str = ""
    accepts_empty: bool = False  # runs even when an input stage produced nothing (report, stats)
    loads_model: bool = True  # the local executor runs it in a child process (GPU memory freed after)
    split: str | None = None  # "module:function" finishing an output computed as N tasks (generate)

    def load(self) -> tuple[type[StageConfig], Callable[[Any], Any]]:
        return _import(self.config, self.name), _import(self.fn, self.name)

    def out_field(self) -> str:
        cls, _ = self.load()
        for f in _OUT_FIELDS:
            if f in cls.model_fields:
                return f
        raise UserError(f"stage kind {self.name!r}: config {cls.__name__} has no output field ({', '.join(_OUT_FIELDS)})")


def _import(path: str, kind: str) -> Any:
    mod_name, _, attr = path.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        if e.name and mod_name.startswith(e.name):
            raise UserError(f"stage kind {kind!r} is not available: module {mod_name} is not installed") from None
        raise
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise UserError(f"stage kind {kind!r} is not available: {mod_name} has no {attr}") from None


STAGE_KINDS: dict[str, StageKind] = {}


def register_stage_kind(kind: StageKind) -> StageKind:
    STAGE_KINDS[kind.name] = kind
    return kind


for _k in (
    StageKind("world", "micota.data.world:WorldConfig", "micota.data.world:build_world",
              description="build the miniature world (problems, oracle traces, tokenizer, model configs)", loads_model=False),
    StageKind("pretrain", "micota.data.world:PretrainConfig", "micota.data.world:pretrain_bases",
              description="train the System-1 base models of the miniature world on short traces"),
    StageKind("generate", "micota.generation.runner:GenerateConfig", "micota.generation.runner:generate",
              description="sample completions for a problem set", split="micota.generation.split:finish_split"),
    StageKind("eval", "micota.eval:EvalConfig", "micota.eval:evaluate", description="generate + grade + summary"),
    StageKind("decontaminate", "micota.data.decontaminate:DecontaminateConfig", "micota.data.decontaminate:decontaminate",
              description="drop training problems sharing an n-gram with a benchmark problem", loads_model=False),
    StageKind("filter", "micota.filtering:FilterConfig", "micota.filtering:filter_samples",
              description="samples -> SFT dataset (correct, under a length cap)", loads_model=False),
    StageKind("mix", "micota.pipeline.mix:MixConfig", "micota.pipeline.mix:mix_datasets",
              description="mix SFT datasets with given proportions (Mix distillation)", loads_model=False),
    StageKind("train", "micota.training:TrainConfig", "micota.training:train", launchable=True, description="SFT"),
    StageKind("merge", "micota.merging:MergeConfig", "micota.merging:merge", description="merge models"),
    StageKind("merge_search", "micota.pipeline.merge_search:MergeSearchConfig", "micota.pipeline.merge_search:merge_search",
              description="accuracy × length Pareto search over merge methods, weights and densities"),
    StageKind("bpc", "micota.scoring.bpc:BpcConfig", "micota.scoring.bpc:compute_bpc", description="bits per character"),
    StageKind("stats", "micota.data.stats:StatsConfig", "micota.data.stats:dataset_stats", description="dataset statistics",
              accepts_empty=True, loads_model=False),
    StageKind("report", "micota.report:ReportConfig", "micota.report:build_report", description="REPORT.md + results.json",
              accepts_empty=True, loads_model=False),
):
    register_stage_kind(_k)


def _entry_point(name: str) -> str | None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.value
    return None


def get_stage_kind(name: str) -> StageKind:
    """A registered kind, an installed ``micota.stage_kinds`` entry point, or (only with
    :func:`plugins_allowed`) an ad-hoc ``module:function`` kind."""
    if name in STAGE_KINDS:
        return STAGE_KINDS[name]
    target = _entry_point(name)
    if target is None and ":" in name:
        if not (_ALLOW_PLUGINS.get() or os.environ.get(PLUGINS_ENV) == "1"):
            raise UserError(f"stage kind {name!r} is an import path: a pipeline file may not load code "
                            "(pass --allow-plugins if you trust it, or install it as a micota.stage_kinds entry point)")
        target = name
    if target is not None:
        fn = _import(target, name)
        params = list(inspect.signature(fn).parameters.values())
        hints = typing.get_type_hints(fn) if params else {}
        cls = hints.get(params[0].name) if params else None
        if not (isinstance(cls, type) and issubclass(cls, StageConfig)):
            raise UserError(f"stage kind {name!r}: first parameter must be annotated with a StageConfig subclass")
        return StageKind(name, f"{cls.__module__}:{cls.__qualname__}", target)
    raise UserError(f"unknown stage kind {name!r} (known: {', '.join(sorted(STAGE_KINDS))}, "
                    f"an installed {ENTRY_POINT_GROUP} entry point, or module:function with --allow-plugins)")
