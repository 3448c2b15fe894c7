"""``micota eval``: generate on benchmarks, grade, summarise with confidence intervals.

Output directory::

    OUT/<benchmark>/samples-*.jsonl   raw samples (a ``generate`` output each, with its manifest)
    OUT/graded.jsonl                  every sample with its grading fields
    OUT/summary.json                  :class:`micota.records.EvalSummary`
    OUT/summary.md                    the table below
    OUT/manifest.json                 written last

Per benchmark: accuracy = mean over problems of (correct samples / n) — pass@1 for greedy n=1,
avg@n otherwise — with a 95% percentile-bootstrap CI over problems; pass@n (unbiased estimator)
when n > 1; mean and median completion tokens; truncation rate (completions that hit
``max_new_tokens``; they are graded wrong). The macro average is the unweighted mean of the
benchmark accuracies, as the paper reports. The model is loaded once, lazily, for all benchmarks;
a rerun skips finished (problem_id, sample_idx) keys. :func:`regrade` re-grades stored samples.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from micota.config import StageConfig
from micota.data.benchmarks import get_spec
from micota.errors import UserError
from micota.generation.runner import BackendArg, GenerateConfig, GenerationOptions, build_backend, generate, load_samples
from micota.io import atomic_write_json, atomic_write_text
from micota.manifest import read_manifest, write_manifest
from micota.records import BenchmarkSummary, EvalSummary, Sample, write_jsonl_atomic
from micota.scoring.stats import bootstrap_ci, pass_at_k

PAPER_BENCHMARKS = ["aime24", "amc23", "olympiadbench", "math500", "gsm8k"]


class EvalConfig(GenerationOptions):
    model: str = Field(description="Model: local HF folder, .gguf file, hub id, or alias smollm2-135m.")
    benchmarks: list[str] = Field(default_factory=lambda: list(PAPER_BENCHMARKS),
                                  description="Benchmarks to evaluate: aime24, aime25, amc23, olympiadbench, math500, gsm8k.")
    out: Path = Field(description="Output directory (resumed if it exists).")
    grade_mode: str | None = Field(None, description="Grading mode for every benchmark (default: each benchmark's own: gsm8k or default).")

    @field_validator("benchmarks")
    @classmethod
    def _nonempty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("give at least one benchmark")
        if len(set(v)) != len(v):
            raise ValueError("a benchmark is listed twice")
        return v

    def generate_config(self, benchmark: str) -> GenerateConfig:
        opts = self.model_dump(include=set(GenerationOptions.model_fields))
        return GenerateConfig(**opts, model=self.model, problems=benchmark, out=Path(self.out) / benchmark)

    def mode_for(self, benchmark: str) -> str:
        return self.grade_mode or get_spec(benchmark).grade_mode


def _check_mode(mode: str) -> None:
    from micota.grading.modes import get_grader

    get_grader(mode)  # UserError naming the known modes


def grade(samples: list[Sample], mode: str) -> list[Sample]:
    """Grade with :mod:`micota.grading`; a completion cut by the token limit is wrong."""
    from micota.grading import grade_samples

    graded = grade_samples(samples, mode, progress=True)  # a bar on stderr (tqdm hides it off a terminal)
    return [s.model_copy(update={"correct": False, "grade_reason": "truncated"}) if s.finish_reason == "length" else s
            for s in graded]


def summarize_benchmark(name: str, samples: list[Sample], *, mode: str, n: int, seed: int = 0) -> BenchmarkSummary:
    by_problem: dict[str, list[bool]] = defaultdict(list)
    for s in samples:
        by_problem[s.problem_id].append(bool(s.correct))
    per_problem = [sum(v) / len(v) for v in by_problem.values()]
    toks = [s.completion_tokens for s in samples]
    acc = sum(per_problem) / len(per_problem) if per_problem else float("nan")
    pak = None
    if n > 1:
        pak = sum(pass_at_k(len(v), sum(v), n) for v in by_problem.values() if len(v) >= n) / max(1, len(by_problem))
    return BenchmarkSummary(
        benchmark=name, grade_mode=mode, n_problems=len(by_problem), n_samples_per_problem=n, accuracy=acc,
        ci95=bootstrap_ci(per_problem, seed=seed), pass_at_k=pak, k=n if n > 1 else None, n_samples=len(samples),
        mean_completion_tokens=statistics.fmean(toks) if toks else 0.0,
        median_completion_tokens=float(statistics.median(toks)) if toks else 0.0,
        truncation_rate=sum(s.finish_reason == "length" for s in samples) / len(samples) if samples else 0.0,
    )


def _pct(x: float | None) -> str:
    return "–" if x is None or x != x else f"{100 * x:.1f}"


def summary_markdown(summary: EvalSummary) -> str:
    n = max((b.n_samples_per_problem for b in summary.benchmarks), default=1)
    acc_name = "pass@1" if n == 1 else f"avg@{n}"
    pk = [f"pass@{n} %"] if n > 1 else []
    head = ["benchmark", "grading", "problems", "samples/problem", f"{acc_name} %", "95% CI", *pk, "mean tokens",
            "median tokens", "truncated %"]
    lines = [f"# Evaluation of `{summary.model}`", "", "| " + " | ".join(head) + " |",
             "|---|---|---:|---:|---:|---|" + "---:|" * len(pk) + "---:|---:|---:|"]
    for b in summary.benchmarks:
        cells = [b.benchmark, b.grade_mode, str(b.n_problems), str(b.n_samples_per_problem), _pct(b.accuracy),
                 f"{_pct(b.ci95[0])}–{_pct(b.ci95[1])}", *([_pct(b.pass_at_k)] if pk else []),
                 f"{b.mean_completion_tokens:.1f}", f"{b.median_completion_tokens:.1f}", _pct(b.truncation_rate)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("| **macro average** | | | | **" + _pct(summary.macro_accuracy) + "** |" + " |" * (len(head) - 5))
    lines += ["", "Accuracy: mean over problems of the share of correct samples; CI: percentile bootstrap over problems "
              f"(2000 resamples). Completions cut at the token limit count as wrong. config {summary.config_hash}.", ""]
    return "\n".join(lines)


def _grade_and_write(cfg: EvalConfig, out: Path, t0: float, *, regraded: bool = False) -> EvalSummary:
    summaries, all_graded = [], []
    for b in cfg.benchmarks:
        mode = cfg.mode_for(b)
        graded = grade(load_samples(out / b), mode)
        graded.sort(key=lambda s: (s.problem_id, s.sample_idx))
        all_graded += graded
        summaries.append(summarize_benchmark(b, graded, mode=mode, n=cfg.n, seed=cfg.seed))
    summary = EvalSummary(model=cfg.model, config_hash=cfg.config_hash(), benchmarks=summaries,
                          macro_accuracy=sum(s.accuracy for s in summaries) / len(summaries))
    write_jsonl_atomic(out / "graded.jsonl", all_graded)
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.md", summary_markdown(summary))
    write_manifest(out, stage="eval", config=cfg, started_at=t0,
                   counts={"benchmarks": len(summaries), "samples": len(all_graded),
                           "correct": sum(bool(s.correct) for s in all_graded)},
                   extra={"model": cfg.model, "regraded": regraded, "macro_accuracy": summary.macro_accuracy})
    return summary


def evaluate(cfg: EvalConfig, *, backend: BackendArg = None) -> EvalSummary:
    """Generate (resumably) on every benchmark, grade, and write the summary; see the module doc."""
    t0 = time.time()
    for b in cfg.benchmarks:
        get_spec(b)
        _check_mode(cfg.mode_for(b))
    out = Path(cfg.out)
    man = read_manifest(out) if out.is_dir() else None
    if man is not None and man.get("stage") != "eval":
        raise UserError(f"{out}: holds a {man.get('stage')!r} output, not an eval; choose another --out")
    loaded: dict[str, Any] = {}

    def lazy_backend() -> Any:  # load the model once, and only if some benchmark has work left
        if "be" not in loaded:
            loaded["be"] = backend if backend is not None else build_backend(cfg, cfg.model)
        return loaded["be"]

    for b in cfg.benchmarks:
        generate(cfg.generate_config(b), backend=lazy_backend)
    return _grade_and_write(cfg, out, t0)


def regrade(out_dir: str | Path, mode: str | None = None) -> EvalSummary:
    """Re-grade a finished eval's stored samples (``mode`` for all benchmarks, or each one's own)."""
    out = Path(out_dir)
    man = read_manifest(out) if out.is_dir() else None
    if man is None or man.get("stage") != "eval" or not man.get("complete"):
        raise UserError(f"{out}: not a finished eval output (no eval manifest.json); run micota eval first")
    cfg = EvalConfig.build({**man["config"], **({"grade_mode": mode} if mode else {})}, prefix=str(out / "manifest.json"))
    for b in cfg.benchmarks:
        _check_mode(cfg.mode_for(b))
    return _grade_and_write(cfg, out, time.time(), regraded=True)
