"""``micota eval``, ``micota grade`` and ``micota generate`` (one generation implementation)."""

from __future__ import annotations

from pathlib import Path

import typer
from pydantic import Field

from micota.cli._auto import config_command
from micota.config import StageConfig


class GradeConfig(StageConfig):
    dir: Path = Field(description="A finished `micota eval` output directory.")
    grade_mode: str | None = Field(None, description="Grading mode for every benchmark: default, gsm8k, hendrycks "
                                   "(default: as evaluated).")


def _eval(cfg):
    from micota.eval import evaluate

    return evaluate(cfg)


def _grade(cfg: GradeConfig):
    from micota.eval import regrade

    return regrade(cfg.dir, cfg.grade_mode)


def _generate(cfg):
    from micota.generation.runner import generate

    return generate(cfg)


def _print_summary(summary) -> None:
    from micota.eval import summary_markdown

    typer.echo(summary_markdown(summary))


def _print_stored_summary(cfg) -> None:
    summary = Path(cfg.out) / "summary.md"
    typer.echo(summary.read_text(encoding="utf-8") if summary.is_file() else str(cfg.out))


# the rerun rule for the sample writers: scheduling keys never matter; a new --limit, benchmark list,
# data directory or grading mode extends (or re-grades) a finished output instead of being an error
_IGNORE = ("batch_size", "device", "tensor_parallel_size")
_EXTEND = ("limit", "benchmarks", "data_dir", "grade_mode")


def register(app: typer.Typer) -> None:
    from micota.eval import EvalConfig
    from micota.generation.runner import GenerateConfig

    config_command(app, "eval", EvalConfig, _eval, positional=("model",), on_result=_print_summary,
                   help="Evaluate a model on math benchmarks: generate, grade, and write summary.json/summary.md.",
                   resumable=True, rerun_ignore=_IGNORE, rerun_extend=_EXTEND, on_skip=_print_stored_summary)
    config_command(app, "grade", GradeConfig, _grade, positional=("dir",), on_result=_print_summary,
                   help="Re-grade the stored samples of an eval output without generating.",
                   deprecated={"grade_mode": ["mode"]})
    config_command(app, "generate", GenerateConfig, _generate, positional=("model",),
                   help="Generate n completions per problem into resumable sharded JSONL (Sample records).",
                   resumable=True, rerun_ignore=_IGNORE, rerun_extend=_EXTEND)
