"""``micota eval``: generate on benchmarks, grade, summarise with confidence intervals.

Output directory::

    OUT/<benchmark>/samples-*.jsonl   raw samples (a ``generate`` output each, with its manifest)
    OUT/graded.jsonl                  every sample with its grading fields
    OUT/summary.json                  :class:`micota.records.EvalSummary`
    OUT/summary.md                    the table below
    OUT/manifest.json                 written last

    OUT/grades/<mode>/{graded.jsonl,summary.json,summary.md}   one per grading mode graded
    OUT/grades/COMPARISON.md          every graded mode side by side

Protocols (``--protocol``, :data:`PROTOCOLS`; a flag given explicitly wins over its preset):

- ``greedy`` — temperature 0, n = 1, 1,024 new tokens (the defaults).
- ``r1`` — the DeepSeek-R1 protocol that open-r1/lighteval run: temperature 0.6, top-p 0.95,
  32,768 new tokens, n = 64 for AIME/AMC, 4 for MATH-500 and OlympiadBench, 1 for GSM8K.
- ``micota-paper`` — greedy, 16,384 new tokens, graded by each benchmark's own mode AND ``hendrycks``.

Per benchmark (n problems, k samples each): accuracy = mean over problems of (correct/k) — pass@1
for k = 1, avg@k otherwise; unbiased pass@k (k > 1); maj@k — the majority answer among the k
samples, answers grouped by grader equivalence (:func:`micota.scoring.stats.majority_vote`), is
it right; each with a 95% CI: Wilson for k = 1 (a proportion of problems) and wherever the
percentile bootstrap over problems degenerates (all problems equal: 0/10 gives 0.0–0.0 there), the
bootstrap otherwise. Also the no-answer rate, grader errors (reasons ``error``/``timeout``/
``crashed``; above 1% a line on stderr), the truncation rate (completions that hit
``max_new_tokens`` are wrong), token lengths and the efficiency metrics of
:mod:`micota.scoring.efficiency`. The summary warns about AIME with k < 16 (±3 points at n = 30
is noise), greedy with k > 1, and truncation above 5%. The macro average is the unweighted mean of
the benchmark accuracies, as the paper reports. Only the problems and samples of THIS run's
``--limit``/``--n`` are summarised, whatever an earlier run left in the directory.

The model is loaded once, lazily, for all benchmarks; a rerun skips finished
(problem_id, sample_idx) keys. :func:`regrade` re-grades stored samples into ``grades/<mode>/``
only: the eval's own summary stays as it was, and an eval rerun never touches another mode's grades.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from micota.config import StageConfig
from micota.data.benchmarks import get_spec, load_problems, problems_source
from micota.errors import UserError
from micota.generation.backends import close_backend
from micota.generation.runner import BackendArg, GenerateConfig, GenerationOptions, build_backend, generate, load_samples
from micota.io import atomic_write_json, atomic_write_text
from micota.manifest import read_manifest, write_manifest
from micota.records import BenchmarkSummary, EvalSummary, Sample, write_jsonl_atomic
from micota.scoring.efficiency import efficiency_metrics
from micota.scoring.stats import bootstrap_ci, majority_vote, pass_at_k, wilson_ci

PAPER_BENCHMARKS = ["aime24", "amc23", "olympiadbench", "math500", "gsm8k"]
OWN_MODE = "benchmark"  # the label of "each benchmark's own grading mode"

#: Evaluation protocols: option presets (``n`` is per benchmark; others get ``n_other``).
PROTOCOLS: dict[str, dict[str, Any]] = {
    "greedy": {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 1024, "n": {}, "n_other": 1, "also_grade": []},
    "r1": {"temperature": 0.6, "top_p": 0.95, "max_new_tokens": 32768,
           "n": {"aime24": 64, "aime25": 64, "amc23": 64, "math500": 4, "olympiadbench": 4, "gsm8k": 1},
           "n_other": 4, "also_grade": []},
    "micota-paper": {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 16384, "n": {}, "n_other": 1,
                     "also_grade": ["hendrycks"]},
}
AIME_MIN_N = 16
TRUNCATION_WARN = 0.05
GRADER_ERROR_WARN = 0.01


class EvalConfig(GenerationOptions):
    model: str = Field(description="Model: local HF folder, .gguf file, hub id, or alias smollm2-135m.")
    benchmarks: list[str] = Field(default_factory=lambda: list(PAPER_BENCHMARKS),
                                  description="Benchmarks to evaluate: aime24, aime25, amc23, olympiadbench, math500, gsm8k.")
    out: Path = Field(description="Output directory (resumed if it exists).")
    protocol: Literal["greedy", "r1", "micota-paper"] | None = Field(
        None, description="Preset: greedy; r1 (T 0.6, top-p 0.95, 32k tokens, n 64 AIME/AMC, 4 MATH-500/OlympiadBench, "
        "1 GSM8K); micota-paper (greedy, 16k tokens, both graders). Flags given explicitly win.")
    n_per_benchmark: dict[str, int] = Field(default_factory=dict, description="Samples per problem for named benchmarks "
                                            "(JSON object; others use --n). Set by --protocol r1.")
    grade_mode: str | None = Field(None, description="Grading mode for every benchmark (default: each benchmark's own: gsm8k or default).")
    also_grade: list[str] = Field(default_factory=list, description="Further grading modes, written to grades/<mode>/ "
                                  "and compared side by side (micota-paper: hendrycks).")

    @field_validator("benchmarks")
    @classmethod
    def _nonempty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("give at least one benchmark")
        if len(set(v)) != len(v):
            raise ValueError("a benchmark is listed twice")
        return v

    @model_validator(mode="after")
    def _apply_protocol(self) -> "EvalConfig":
        if self.protocol is None:
            return self
        preset, given = PROTOCOLS[self.protocol], set(self.model_fields_set)
        for k in ("temperature", "top_p", "max_new_tokens", "also_grade"):
            if k not in given:
                object.__setattr__(self, k, preset[k])
        if "n" not in given and "n_per_benchmark" not in given:
            object.__setattr__(self, "n", preset["n_other"])
            object.__setattr__(self, "n_per_benchmark", dict(preset["n"]))
        return self

    def n_for(self, benchmark: str) -> int:
        return self.n_per_benchmark.get(benchmark, self.n)

    def generate_config(self, benchmark: str) -> GenerateConfig:
        opts = self.model_dump(include=set(GenerationOptions.model_fields))
        opts["n"] = self.n_for(benchmark)
        return GenerateConfig(**opts, model=self.model, problems=benchmark, out=Path(self.out) / benchmark)

    def mode_for(self, benchmark: str, mode: str | None = None) -> str:
        m = mode if mode is not None else self.grade_mode
        return get_spec(benchmark).grade_mode if m in (None, OWN_MODE) else m

    def mode_labels(self) -> list[str]:
        """The grading modes this eval writes: its primary one first (``benchmark`` = each one's own)."""
        return list(dict.fromkeys([self.grade_mode or OWN_MODE, *self.also_grade]))

    def sampling_settings(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "temperature": self.temperature, "top_p": self.top_p,
                "max_new_tokens": self.max_new_tokens, "n": {b: self.n_for(b) for b in self.benchmarks},
                "seed": self.seed, "instruction": self.instruction, "system": self.system,
                "use_chat_template": self.use_chat_template,
                "template": str(self.template) if self.template else None, "backend": self.backend}


def _check_mode(mode: str) -> None:
    from micota.grading.modes import get_grader

    if mode != OWN_MODE:
        get_grader(mode)  # UserError naming the known modes


def grade(samples: list[Sample], mode: str, *, label: str = "grading") -> list[Sample]:
    """Grade with :mod:`micota.grading`; a completion cut by the token limit is wrong. A progress bar
    named ``label`` on stderr (redrawn on a terminal; elsewhere a line every 30 s and a last one)."""
    from micota.grading import grade_samples

    graded = grade_samples(samples, mode, progress=label)
    return [s.model_copy(update={"correct": False, "grade_reason": "truncated"}) if s.finish_reason == "length" else s
            for s in graded]


def _same_answer_table(by_problem: dict[str, list[Sample]], mode: str) -> dict[tuple[str, str], bool]:
    """Grader equivalence of every pair of distinct extracted answers within a problem."""
    from micota.grading import grade_batch
    from micota.grading.modes import box_number

    pairs = sorted({(a, b) for ss in by_problem.values()
                    for a in {s.extracted for s in ss if s.extracted} for b in {s.extracted for s in ss if s.extracted}
                    if a < b})
    if mode == "gsm8k":  # its reference side reads the last number only: compare values directly
        return {(a, b): box_number(a) is not None and box_number(a) == box_number(b) for a, b in pairs}
    res = grade_batch([("\\boxed{" + b + "}", a) for a, b in pairs], mode) if pairs else []
    return {p: r.correct for p, r in zip(pairs, res)}


def majority_correct(by_problem: dict[str, list[Sample]], mode: str) -> dict[str, bool]:
    """maj@k per problem: is the representative of the largest answer group (grader equivalence) right."""
    table = _same_answer_table(by_problem, mode)

    def same(a: str, b: str) -> bool:
        return a == b or table.get((min(a, b), max(a, b)), False)

    out = {}
    for pid, ss in by_problem.items():
        i = majority_vote([s.extracted or None for s in ss], same)
        out[pid] = i is not None and bool(ss[i].correct)
    return out


def _proportion_ci(values: list[float], n_samples: int, seed: int) -> tuple[tuple[float, float], str]:
    """Wilson when each value is one 0/1 sample or the bootstrap degenerates; else the bootstrap."""
    if not values:
        return (float("nan"), float("nan")), "none"
    if n_samples == 1 or min(values) == max(values):
        return wilson_ci(sum(values), len(values)), "wilson"
    return bootstrap_ci(values, seed=seed), "bootstrap"


def summarize_benchmark(name: str, samples: list[Sample], *, mode: str, n: int, seed: int = 0,
                        levels: dict[str, Any] | None = None, problems_file: dict[str, Any] | None = None,
                        greedy: bool = False) -> BenchmarkSummary:
    from micota.grading import ERROR_REASONS

    by_problem: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_problem[s.problem_id].append(s)
    for ss in by_problem.values():
        ss.sort(key=lambda s: s.sample_idx)
    per_problem = [sum(bool(s.correct) for s in v) / len(v) for v in by_problem.values()]
    toks = [s.completion_tokens for s in samples]
    acc = sum(per_problem) / len(per_problem) if per_problem else float("nan")
    ci, method = _proportion_ci(per_problem, n, seed)
    pak = pak_ci = maj = maj_ci = None
    if n > 1:
        full = [v for v in by_problem.values() if len(v) >= n]
        pak_values = [pass_at_k(len(v), sum(bool(s.correct) for s in v), n) for v in full]
        pak = sum(pak_values) / max(1, len(by_problem))
        pak_ci = _proportion_ci(pak_values, 1 if all(x in (0.0, 1.0) for x in pak_values) else n, seed)[0]
        majs = [float(x) for x in majority_correct(by_problem, mode).values()]
        maj, maj_ci = sum(majs) / len(majs), wilson_ci(sum(majs), len(majs))
    reasons: dict[str, int] = defaultdict(int)
    for s in samples:
        reasons[s.grade_reason or "ungraded"] += 1
    errors = sum(reasons.get(r, 0) for r in ERROR_REASONS)
    trunc = sum(s.finish_reason == "length" for s in samples) / len(samples) if samples else 0.0
    warnings = []
    if name.startswith("aime") and n < AIME_MIN_N:
        warnings.append(f"{name}: n = {n} samples per problem < {AIME_MIN_N}; on 30 problems ±3 points is noise")
    if n > 1 and greedy:
        warnings.append(f"{name}: greedy decoding with n = {n}: the samples are copies, avg@n is pass@1")
    if trunc > TRUNCATION_WARN:
        warnings.append(f"{name}: {100 * trunc:.1f}% of completions hit the token limit (> {100 * TRUNCATION_WARN:.0f}%)")
    if samples and errors / len(samples) > GRADER_ERROR_WARN:
        warnings.append(f"{name}: {errors} grader errors in {len(samples)} samples ({100 * errors / len(samples):.1f}%)")
    return BenchmarkSummary(
        benchmark=name, grade_mode=mode, n_problems=len(by_problem), n_samples_per_problem=n, accuracy=acc,
        ci95=ci, ci_method=method, pass_at_k=pak, pass_at_k_ci95=pak_ci, k=n if n > 1 else None,
        maj_at_k=maj, maj_at_k_ci95=maj_ci, n_samples=len(samples),
        mean_completion_tokens=statistics.fmean(toks) if toks else 0.0,
        median_completion_tokens=float(statistics.median(toks)) if toks else 0.0,
        truncation_rate=trunc,
        no_answer_rate=sum(reasons.get(r, 0) for r in ("no_answer", "empty_box")) / len(samples) if samples else None,
        grader_errors=errors, grader_error_rate=errors / len(samples) if samples else None, reasons=dict(reasons),
        efficiency=efficiency_metrics(samples, levels=levels), problems_file=problems_file or {}, warnings=warnings,
    )


def _pct(x: float | None) -> str:
    return "–" if x is None or x != x else f"{100 * x:.1f}"


def _ci_txt(ci: tuple[float, float] | None) -> str:
    return "–" if ci is None else f"{_pct(ci[0])}–{_pct(ci[1])}"


def _num(x: float | None, fmt: str = "{:.1f}") -> str:
    return "–" if x is None or x != x else fmt.format(x)


def summary_markdown(summary: EvalSummary) -> str:
    bs = summary.benchmarks
    ks = {b.n_samples_per_problem for b in bs}
    k = "k" if len(ks) > 1 else str(next(iter(ks), 1))
    acc_name = "pass@1" if ks == {1} else f"avg@{k}"
    head = ["benchmark", "grading", "problems", "k", f"{acc_name} %", "95% CI", f"pass@{k} %", f"maj@{k} %",
            "no answer %", "truncated %", "grader errors", "mean tokens", "median tokens"]
    lines = [f"# Evaluation of `{summary.model}`", ""]
    settings = getattr(summary, "sampling", None)
    if settings:
        lines += ["Sampling: " + ", ".join(f"{k} = `{v}`" for k, v in settings.items() if k != "instruction"),
                  f"Instruction: `{settings.get('instruction')}`", ""]
    lines += ["| " + " | ".join(head) + " |", "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for b in bs:
        cells = [b.benchmark, b.grade_mode, str(b.n_problems), str(b.n_samples_per_problem), _pct(b.accuracy),
                 f"{_ci_txt(b.ci95)} ({b.ci_method or 'bootstrap'})",
                 _pct(b.pass_at_k) + (f" ({_ci_txt(b.pass_at_k_ci95)})" if b.pass_at_k is not None else ""),
                 _pct(b.maj_at_k) + (f" ({_ci_txt(b.maj_at_k_ci95)})" if b.maj_at_k is not None else ""),
                 _pct(b.no_answer_rate), _pct(b.truncation_rate),
                 f"{b.grader_errors} ({_pct(b.grader_error_rate)}%)",
                 f"{b.mean_completion_tokens:.1f}", f"{b.median_completion_tokens:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("| **macro average** | | | | **" + _pct(summary.macro_accuracy) + "** |" + " |" * (len(head) - 5))
    lines += ["", "## Efficiency", "", "| benchmark | samples | correct | tokens per correct | reflections / 1k tokens "
              "| reflections / response | responses with reflection % | outcome efficiency |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for b in bs:
        e = b.efficiency
        if e:
            lines.append(f"| {b.benchmark} | {e['n_samples']} | {e['n_correct']} | {_num(e['tokens_per_correct'])} | "
                         f"{_num(e['reflections_per_1k_tokens'], '{:.2f}')} | {_num(e['reflections_per_response'], '{:.2f}')} | "
                         f"{_pct(e['responses_with_reflection'])} | {_num(e['outcome_efficiency'], '{:.3f}')} |")
    for b in bs:
        if b.efficiency.get("tokens_by_level"):
            lv = b.efficiency["tokens_by_level"]
            lines += ["", f"Mean tokens by difficulty level ({b.benchmark}): "
                      + ", ".join(f"level {k}: {v['mean_tokens']:.0f} (n = {v['n']})" for k, v in lv.items())]
    warnings = [w for b in bs for w in b.warnings]
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    files = [(b.benchmark, b.problems_file) for b in bs if b.problems_file]
    if files:
        lines += ["", "## Benchmark files", ""] + [f"- {n}: `{f.get('path')}` sha256 `{f.get('sha256')}`" for n, f in files]
    lines += ["", "Accuracy: mean over problems of the share of correct samples (k per problem). CI 95%: Wilson score "
              "interval for k = 1 or when all problems score alike, else percentile bootstrap over problems (2000 "
              "resamples). maj@k: majority answer (grouped by grader equivalence) right. Completions cut at the token "
              f"limit count as wrong. Efficiency: see micota.scoring.efficiency. config {summary.config_hash}.", ""]
    return "\n".join(lines)


def comparison_markdown(summaries: dict[str, EvalSummary]) -> str:
    """The benchmarks (rows) under every grading mode (columns): accuracy % and 95% CI."""
    labels = list(summaries)
    names = list(dict.fromkeys(b.benchmark for s in summaries.values() for b in s.benchmarks))
    lines = ["# Grading modes side by side", "", "| benchmark | n | " + " | ".join(labels) + " |",
             "|---|---:|" + "---|" * len(labels)]
    for name in names:
        cells, n = [], ""
        for lab in labels:
            b = next((b for b in summaries[lab].benchmarks if b.benchmark == name), None)
            cells.append("–" if b is None else f"{_pct(b.accuracy)} ({_ci_txt(b.ci95)}) [{b.grade_mode}]")
            n = n or ("" if b is None else f"{b.n_problems}×{b.n_samples_per_problem}")
        lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    lines.append("| **macro average** | | " + " | ".join(_pct(summaries[lab].macro_accuracy) for lab in labels) + " |")
    return "\n".join(lines + ["", "Cells: accuracy % (95% CI) [grading mode]. Each column is grades/<mode>/summary.json.", ""])


def _this_run(cfg: EvalConfig, b: str, samples: list[Sample]) -> list[Sample]:
    """Only the samples this config asks for: its problems (``--limit``) and sample indices (``--n``)."""
    ids = {p.id for p in load_problems(b, data_dir=cfg.data_dir, limit=cfg.limit)}
    return [s for s in samples if s.problem_id in ids and s.sample_idx < cfg.n_for(b)]


def _levels(cfg: EvalConfig, b: str) -> dict[str, Any] | None:
    lv = {p.id: (p.model_extra or {}).get("level", p.meta.get("level"))
          for p in load_problems(b, data_dir=cfg.data_dir, limit=cfg.limit)}
    return lv if any(v is not None for v in lv.values()) else None


def _grade_mode(cfg: EvalConfig, out: Path, label: str, raw: dict[str, list[Sample]],
                files: dict[str, dict[str, Any]]) -> tuple[EvalSummary, list[Sample]]:
    summaries, all_graded = [], []
    for b in cfg.benchmarks:
        mode = cfg.mode_for(b, label)
        graded = grade(raw[b], mode, label=f"grading {b} ({mode})")
        graded.sort(key=lambda s: (s.problem_id, s.sample_idx))
        all_graded += graded
        summaries.append(summarize_benchmark(b, graded, mode=mode, n=cfg.n_for(b), seed=cfg.seed,
                                             levels=_levels(cfg, b), problems_file=files[b],
                                             greedy=cfg.temperature == 0))
    summary = EvalSummary(model=cfg.model, config_hash=cfg.config_hash(), benchmarks=summaries,
                          macro_accuracy=sum(s.accuracy for s in summaries) / len(summaries),
                          grading=label, sampling=cfg.sampling_settings(),
                          template_hashes=sorted({s.template_hash for s in all_graded if s.template_hash}),
                          warnings=[w for s in summaries for w in s.warnings])
    for s in summaries:
        if s.grader_error_rate and s.grader_error_rate > GRADER_ERROR_WARN:
            print(f"warning: {s.benchmark} ({s.grade_mode}): {s.grader_errors} grader errors in {s.n_samples} samples "
                  f"({100 * s.grader_error_rate:.1f}% > {100 * GRADER_ERROR_WARN:.0f}%)", file=sys.stderr)
    d = out / "grades" / label
    d.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(d / "graded.jsonl", all_graded)
    atomic_write_json(d / "summary.json", summary)
    atomic_write_text(d / "summary.md", summary_markdown(summary))
    return summary, all_graded


def _write_comparison(out: Path) -> None:
    from micota.io import read_json

    labels = sorted(p.parent.name for p in (out / "grades").glob("*/summary.json"))
    sums = {lab: EvalSummary.model_validate(read_json(out / "grades" / lab / "summary.json")) for lab in labels}
    atomic_write_text(out / "grades" / "COMPARISON.md", comparison_markdown(sums))


def _grade_and_write(cfg: EvalConfig, out: Path, t0: float, *, labels: list[str], top_level: bool) -> EvalSummary:
    raw = {b: _this_run(cfg, b, load_samples(out / b)) for b in cfg.benchmarks}
    files = {b: problems_source(b, cfg.data_dir) for b in cfg.benchmarks}
    results = {lab: _grade_mode(cfg, out, lab, raw, files) for lab in labels}
    _write_comparison(out)
    summary, all_graded = results[labels[0]]
    if top_level:
        write_jsonl_atomic(out / "graded.jsonl", all_graded)
        atomic_write_json(out / "summary.json", summary)
        atomic_write_text(out / "summary.md", summary_markdown(summary))
        write_manifest(out, stage="eval", config=cfg, started_at=t0,
                       counts={"benchmarks": len(cfg.benchmarks), "samples": len(all_graded),
                               "correct": sum(bool(s.correct) for s in all_graded),
                               "grader_errors": sum(b.grader_errors for b in summary.benchmarks)},
                       extra={"model": cfg.model, "macro_accuracy": summary.macro_accuracy, "grades": labels,
                              "sampling": cfg.sampling_settings(), "benchmark_files": files})
    return summary


def evaluate(cfg: EvalConfig, *, backend: BackendArg = None) -> EvalSummary:
    """Generate (resumably) on every benchmark, grade, and write the summary; see the module doc."""
    t0 = time.time()
    for b in cfg.benchmarks:
        get_spec(b)
        for lab in cfg.mode_labels():
            _check_mode(cfg.mode_for(b, lab))
    out = Path(cfg.out)
    man = read_manifest(out) if out.is_dir() else None
    if man is not None and man.get("stage") != "eval":
        raise UserError(f"{out}: holds a {man.get('stage')!r} output, not an eval; choose another --out")
    loaded: dict[str, Any] = {}

    def lazy_backend() -> Any:  # load the model once, and only if some benchmark has work left
        if "be" not in loaded:
            loaded["be"] = backend if backend is not None else build_backend(cfg, cfg.model)
        return loaded["be"]

    try:
        for b in cfg.benchmarks:
            generate(cfg.generate_config(b), backend=lazy_backend)
    finally:
        if backend is None and "be" in loaded:
            close_backend(loaded["be"])  # the engine this stage built is shut down when it ends
    return _grade_and_write(cfg, out, t0, labels=cfg.mode_labels(), top_level=True)


def regrade(out_dir: str | Path, mode: str | None = None) -> EvalSummary:
    """Re-grade a finished eval's stored samples into ``grades/<mode>/`` (``mode`` for every benchmark,
    or each one's own) and refresh ``grades/COMPARISON.md``; the eval's own summary is left alone."""
    out = Path(out_dir)
    man = read_manifest(out) if out.is_dir() else None
    if man is None or man.get("stage") != "eval" or not man.get("complete"):
        raise UserError(f"{out}: not a finished eval output (no eval manifest.json); run micota eval first")
    cfg = EvalConfig.build(man["config"], prefix=str(out / "manifest.json"))
    label = mode or OWN_MODE
    for b in cfg.benchmarks:
        _check_mode(cfg.mode_for(b, label))
    return _grade_and_write(cfg, out, time.time(), labels=[label], top_level=False)
