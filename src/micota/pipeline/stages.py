"""The registry of stage kinds: each pipeline ``kind`` is one library function and its typed config.

A kind is ``(config class, function)`` named by import path and imported lazily, so a pipeline
file can be validated without loading torch. The function is the same one the CLI subcommand
calls; the pipeline YAML keys of a stage are that config's fields (= the CLI flags).

Extend with :func:`register_stage_kind`, or name ``module:function`` as a stage's ``kind`` (the
config class is then read from the function's first parameter annotation).
"""

from __future__ import annotations

import importlib
import inspect
import typing
from dataclasses import dataclass
from typing import Any, Callable

from micota.config import StageConfig
from micota.errors import UserError

_OUT_FIELDS = ("out", "out_dir", "output", "output_dir")


@dataclass(frozen=True)
class StageKind:
    """One stage kind. ``config``/``fn`` are ``module:attr`` paths; ``launchable`` kinds may run
    under a multi-process launcher (accelerate, torchrun); ``loads_model`` kinds run in a child
    process under the ``local`` executor (see :mod:`micota.pipeline.executors`)."""

    name: str
    config: str
    fn: str
    launchable: bool = False
    description: str = ""
    accepts_empty: bool = False  # runs even when an input stage produced nothing (report, stats)
    loads_model: bool = True  # the local executor runs it in a child process (GPU memory freed after)

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
              description="sample completions for a problem set"),
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
              description="pick the merge weight whose traces hit a target length ratio"),
    StageKind("bpc", "micota.scoring.bpc:BpcConfig", "micota.scoring.bpc:compute_bpc", description="bits per character"),
    StageKind("stats", "micota.data.stats:StatsConfig", "micota.data.stats:dataset_stats", description="dataset statistics",
              accepts_empty=True, loads_model=False),
    StageKind("report", "micota.report:ReportConfig", "micota.report:build_report", description="REPORT.md + results.json",
              accepts_empty=True, loads_model=False),
):
    register_stage_kind(_k)


def get_stage_kind(name: str) -> StageKind:
    """A registered kind, or an ad-hoc ``module:function`` kind."""
    if name in STAGE_KINDS:
        return STAGE_KINDS[name]
    if ":" in name:
        fn = _import(name, name)
        params = list(inspect.signature(fn).parameters.values())
        hints = typing.get_type_hints(fn) if params else {}
        cls = hints.get(params[0].name) if params else None
        if not (isinstance(cls, type) and issubclass(cls, StageConfig)):
            raise UserError(f"stage kind {name!r}: first parameter must be annotated with a StageConfig subclass")
        return StageKind(name, f"{cls.__module__}:{cls.__qualname__}", name)
    raise UserError(f"unknown stage kind {name!r} (known: {', '.join(sorted(STAGE_KINDS))}, or module:function)")
