"""``report`` stage: REPORT.md + results.json (+ PNGs) from the pipeline's stage outputs.

Inputs are stage output directories: per variant the student's eval (an ``eval`` output with
``graded.jsonl``, or a ``generate`` output whose samples are graded here); the fine-tuned and the
merged TA's samples on the same problems (claim i); ``bpc`` outputs per dataset (claim iii); a
``stats`` output and a ``merge_search`` output whose plots are copied.

Before the claims, the validity checks of :mod:`micota.report.checks` are computed from the same
outputs (``results.json`` ``checks``); every claim lists its ``failed_checks`` and is ``not testable``
when any failed. Per variant the report gives the dataset size, mean trace tokens, the student's
accuracy per split (all training seeds pooled per problem) with CIs, truncation, BPC and its
uniform-vocabulary baseline, beside the untouched student base.

Every number in results.json has an entry in ``sources`` (looked up by its dotted path or the
longest prefix of it): the stage output file(s) it was computed from, relative to the pipeline
output root (the report directory's parent), and ``how`` it was computed. REPORT.md is rendered
from results.json only.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import Field

from micota.config import StageConfig
from micota.errors import UserError
from micota.generation.graded import load_graded
from micota.io import atomic_dir, atomic_write_json, atomic_write_text
from micota.manifest import MANIFEST, empty_reason, write_manifest
from micota.records import BpcRecord, Sample, read_jsonl
from micota.report import checks as K
from micota.report import claims as C
from micota.report.render import fmt, render_markdown
from micota.scoring.stats import bootstrap_ci, paired_bootstrap_diff, paired_bootstrap_macro


class ReportConfig(StageConfig):
    out: Path = Field(description="Output directory (REPORT.md, results.json, PNGs).")
    title: str = Field("MiCoTA report", description="Report title.")
    evals: dict[str, str | list[str]] = Field(description="Variant name -> the student's eval (or generate) output directory, or a list of them (one per split).")
    baseline: str = Field("long", description="Variant of the paper's baseline (teacher long CoT).")
    method: str = Field("mid", description="Variant of the method (Mid-CoT from the merged TA).")
    ta_finetuned: str | None = Field(None, description="Samples (eval/generate dir) of the fine-tuned TA, for claim (i).")
    ta_merged: str | None = Field(None, description="Samples of the merged TA on the same problems, for claim (i).")
    bpc: dict[str, str] = Field(default_factory=dict, description="Dataset (variant) name -> bpc output directory under the student base.")
    stats: str | None = Field(None, description="A stats output directory (its PNGs are copied).")
    merge_search: str | None = Field(None, description="A merge_search output directory (its PNGs copied, chosen point, merge curve and linear references reported).")
    bases: str | None = Field(None, description="A pretrain output directory (the miniature world's System-1 bases): their accuracies are reported.")
    student_base: list[str] = Field(default_factory=list, description="Eval/generate outputs of the untouched student base (one per split), shown beside every student.")
    ta_base_hard: str | None = Field(None, description="Samples of the TA base on the hard split (check long_cot_helps).")
    ta_finetuned_hard: str | None = Field(None, description="Samples of the fine-tuned TA on the hard split (check long_cot_helps).")
    ta_base_model: str | None = Field(None, description="TA base model folder (task-vector size, when the merge report lacks it).")
    ta_finetuned_model: str | None = Field(None, description="Fine-tuned TA model folder (task-vector size).")
    train: dict[str, str | list[str]] = Field(default_factory=dict, description="Variant -> the student's train output(s), one per seed (convergence check).")
    data: dict[str, str] = Field(default_factory=dict, description="Variant -> its SFT dataset (size and problem-id checks).")
    base_bpc: dict[str, str] = Field(default_factory=dict, description="Label -> bpc output of a base model on a trace style (check base_knows).")
    reference: str = Field("short", description="Variant the method must beat on the hard split for step_by_step_helps.")
    hard_split: str = Field("world-hard", description="Sample source of the hard split.")
    max_task_vector: float = Field(0.05, gt=0, description="Check task_vector: largest ‖θ_ft − θ_base‖/‖θ_base‖.")
    interpolation_margin: float = Field(0.1, ge=0, lt=0.5, description="Check interpolation: linear w=0.5 length this far (share of the gap) from base and fine-tune.")
    max_truncation: float = Field(0.05, ge=0, le=1, description="Check truncation: largest share of completions cut by max_new_tokens.")
    min_examples: int = Field(200, ge=1, description="Check data_size: fewest training examples per variant.")
    max_late_loss_drop: float = Field(0.1, ge=0, description="Check converged: largest share of the run's loss reduction (first logged loss − last quarter) made in its last quarter, at its lower bound.")
    converged_z: float = Field(1.645, ge=0, description="Check converged: the drop's lower bound is z standard errors below it (1.645: one-sided 95%; 0: the point ratio).")
    length_range: tuple[float, float] = Field((0.3, 0.7), description="Claim (i): merged/fine-tuned length-ratio range.")
    min_retention: float = Field(0.9, description="Claim (i): minimum merged/fine-tuned accuracy ratio.")
    n_boot: int = Field(2000, ge=100, description="Bootstrap resamples.")
    seed: int = Field(0, description="Bootstrap seed.")


class _Src:
    """Collects the source of every number."""

    def __init__(self, root: Path):
        self.root, self.map = root, {}

    def rel(self, p: Path) -> str:
        return os.path.relpath(p, self.root)

    def add(self, key: str, files: list[Path], how: str, pointer: str | None = None) -> None:
        self.map[key] = {"files": [self.rel(f) for f in files], "how": how, **({"pointer": pointer} if pointer else {})}


def per_problem(samples: list[Sample]) -> dict[str, tuple[float, float]]:
    """problem_id -> (mean correct, mean completion tokens) over its samples."""
    acc: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        acc[s.problem_id].append(s)
    return {p: (sum(bool(s.correct) for s in v) / len(v), sum(s.completion_tokens for s in v) / len(v)) for p, v in acc.items()}


def _load_many(dirs: str | list[str]) -> tuple[list[Sample], list[Path]]:
    samples, files = [], []
    for d in [dirs] if isinstance(dirs, str) else dirs:
        ss, fs = load_graded(d)
        samples += ss
        files += fs
    return samples, files


def _variant_block(name: str, dirs: str | list[str], cfg: ReportConfig, src: _Src, section: str = "variants"
                   ) -> tuple[dict[str, Any], dict[str, dict[str, tuple[float, float]]], list[Sample]]:
    """Per split: problems, accuracy (mean over problems of the mean over that problem's samples —
    every seed's student contributes one sample per problem), CI, mean tokens, truncation."""
    samples, files = _load_many(dirs)
    by_split: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_split[s.source or "all"].append(s)
    block, pp_all = {}, {}
    for split, ss in sorted(by_split.items()):
        pp = per_problem(ss)
        pp_all[split] = pp
        vals = [a for a, _ in pp.values()]
        lo, hi = bootstrap_ci(vals, n_boot=cfg.n_boot, seed=cfg.seed)
        key = f"{section}.{name}.{split}" if name else f"{section}.{split}"
        block[split] = {"n": len(pp), "samples": len(ss), "accuracy": sum(vals) / len(vals), "ci95": [lo, hi],
                        "mean_completion_tokens": sum(s.completion_tokens for s in ss) / len(ss),
                        "truncated": sum(s.finish_reason == "length" for s in ss) / len(ss)}
        src.add(key, files, f"samples with source={split!r}: accuracy = mean over problems of mean(correct); "
                             "ci95 = bootstrap_ci over problems; mean_completion_tokens = mean over samples; "
                             "truncated = share of samples with finish_reason 'length'")
    return block, pp_all, samples


def _uniform_bits(model: str | None) -> float | None:
    v = K.vocab_size(model) if model else None
    return math.log2(v) if v else None


def _bpc_block(name: str, d: Path, src: _Src, cfg: ReportConfig, section: str = "bpc") -> tuple[dict[str, Any], list[BpcRecord]]:
    from micota.manifest import read_manifest

    f = Path(d) / "bpc.jsonl"
    recs = read_jsonl(f, BpcRecord)
    if not recs:
        raise UserError(f"{f}: no records")
    bits, chars, tokens = sum(r.nll_bits for r in recs), sum(r.chars for r in recs), sum(r.tokens for r in recs)
    lo, hi = bootstrap_ci([r.bpc for r in recs], n_boot=cfg.n_boot, seed=cfg.seed)
    model = ((read_manifest(Path(d)) or {}).get("config") or {}).get("model")
    ub = _uniform_bits(model)
    src.add(f"{section}.{name}", [f, Path(d) / MANIFEST],
            "bpc = sum(nll_bits)/sum(chars); bits_per_token = sum(nll_bits)/sum(tokens); mean_record_bpc = mean(bpc); "
            "ci95 = bootstrap_ci of per-record bpc; uniform_bits_per_token = log2(vocab_size of the scoring model); "
            "uniform_bpc = uniform_bits_per_token * sum(tokens)/sum(chars)")
    return {"n": len(recs), "bpc": bits / chars, "bits_per_token": bits / tokens,
            "mean_record_bpc": sum(r.bpc for r in recs) / len(recs), "ci95": [lo, hi], "mean_chars": chars / len(recs),
            "uniform_bits_per_token": ub, "uniform_bpc": ub * tokens / chars if ub else None}, recs


def _dataset_info(d: str) -> dict[str, Any]:
    from micota.records import SftExample

    f = Path(d) / "data.jsonl" if Path(d).is_dir() else Path(d)
    rows = read_jsonl(f, SftExample)
    return {"examples": len(rows), "problems": sorted({r.problem_id for r in rows}), "file": f}


def _train_curves(dirs: str | list[str]) -> list[tuple[Path, dict[str, Any]]]:
    from micota.io import read_json

    return [(Path(d) / "train_report.json", read_json(Path(d) / "train_report.json"))
            for d in ([dirs] if isinstance(dirs, str) else dirs)]


def _task_vector(cfg: ReportConfig, src: _Src) -> float | None:
    from micota.io import read_json

    rep = Path(cfg.merge_search) / "merge_report.json" if cfg.merge_search else None
    tv = (read_json(rep).get("task_vector") or {}) if rep and rep.is_file() else {}
    if tv.get("relative") is not None:
        src.add("checks.task_vector", [rep], "merge_report.json task_vector.relative (computed by the merge engine)")
        return float(tv["relative"])
    if cfg.ta_base_model and cfg.ta_finetuned_model:
        src.add("checks.task_vector", sorted(Path(cfg.ta_base_model).glob("*.safetensors")) + sorted(Path(cfg.ta_finetuned_model).glob("*.safetensors")),
                "checks.task_vector_ratio over the two safetensors folders")
        return K.task_vector_ratio(cfg.ta_base_model, cfg.ta_finetuned_model)
    return None


def _interpolation(cfg: ReportConfig, src: _Src) -> tuple[float | None, dict[str, Any]]:
    from micota.io import read_json

    f = Path(cfg.merge_search) / "merge_search.json" if cfg.merge_search else None
    if not (f and f.is_file()):
        return None, {}
    ms = read_json(f)
    lin = [p for p in ms.get("points", []) if p.get("reference") and p.get("method") == "linear"
           and abs(float(p.get("weight", -1)) - 0.5) < 1e-9]
    base, ft = ms.get("base") or {}, ms.get("finetuned") or {}
    if not (lin and base.get("mean_tokens") is not None and ft.get("mean_tokens") is not None):
        return None, {}
    nums = {"base_mean_tokens": base["mean_tokens"], "finetuned_mean_tokens": ft["mean_tokens"],
            "linear_0.5_mean_tokens": lin[0]["mean_tokens"]}
    src.add("checks.interpolation", [f], "merge_search.json: base, finetuned and the linear reference point at w=0.5")
    return K.interpolation_position(base["mean_tokens"], ft["mean_tokens"], lin[0]["mean_tokens"]), nums


def compute_checks(cfg: ReportConfig, res: dict[str, Any], ta: dict[str, dict[str, Any]], src: _Src) -> list[dict[str, Any]]:
    """The validity table (see :mod:`micota.report.checks`), from the blocks already in ``res``."""
    m, b, ref, hard = cfg.method, cfg.baseline, cfg.reference, cfg.hard_split
    out: list[dict[str, Any]] = []
    tv = _task_vector(cfg, src)
    out.append(K.check("task_vector", tv, f"<= {fmt(cfg.max_task_vector)}", tv is not None and tv <= cfg.max_task_vector,
                       ["i", "ii"], "‖θ_ft − θ_base‖₂/‖θ_base‖₂ of the TA fine-tune"))
    pos, nums = _interpolation(cfg, src)
    mg = cfg.interpolation_margin
    out.append(K.check("interpolation", pos, f"in [{fmt(mg)}, {fmt(1 - mg)}]", pos is not None and mg <= pos <= 1 - mg, ["i", "ii"],
                       "(L_linear0.5 − L_base)/(L_ft − L_base), mean completion tokens on the merge-search probe"
                       + (f": {nums}" if nums else ": not measured (no linear reference point in the merge search)")))
    # the bases know the styles: bits/token under the base below the uniform guess
    known = {**{f"student/{k}": v for k, v in res["bpc"].items()}, **res.get("base_bpc", {})}
    for label, v in known.items():
        ub = v.get("uniform_bits_per_token")
        src.add(f"checks.base_knows:{label}", [Path(src.root / f) for f in src.map[f"bpc.{label.removeprefix('student/')}" if label.startswith("student/") and label.removeprefix("student/") in res["bpc"] else f"base_bpc.{label}"]["files"]], "bits_per_token vs uniform_bits_per_token of that bpc block")
        out.append(K.check(f"base_knows:{label}", v["bits_per_token"], f"< log2 V = {fmt(ub)}" if ub else "< log2 V",
                           ub is not None and v["bits_per_token"] < ub, ["i", "ii", "iii"],
                           "bits per token of the dataset under the base vs the uniform guess over its vocabulary"))
    for label in (m, b):
        v = res["bpc"].get(label)
        ubpc = v and v.get("uniform_bpc")
        if v:
            src.add(f"checks.bpc_uniform:{label}", [Path(src.root / f) for f in src.map[f"bpc.{label}"]["files"]], "bpc vs uniform_bpc")
        out.append(K.check(f"bpc_uniform:{label}", v and v["bpc"], f"< {fmt(ubpc)}" if ubpc else "< uniform BPC",
                           bool(v and ubpc and v["bpc"] < ubpc), ["iii"], "BPC under the student base vs log2 V · tokens/chars"))
    # long CoT helps the TA where it should
    hb, hf = ta.get("base_hard"), ta.get("finetuned_hard")
    d = hf["accuracy"] - hb["accuracy"] if hb and hf else None
    if d is not None:
        src.add("checks.long_cot_helps", [Path(src.root / f) for k in ("ta.base_hard", "ta.finetuned_hard") for f in src.map[k]["files"]],
                "ta.finetuned_hard.accuracy - ta.base_hard.accuracy")
    out.append(K.check("long_cot_helps", d, "not negative, fine-tune above zero", d is not None and d >= 0 and hf["accuracy"] > 0, ["i", "ii"],
                       "accuracy(fine-tuned TA) − accuracy(TA base) on the hard split"
                       + ("" if d is not None else ": not measured (give ta_base_hard and ta_finetuned_hard)")))
    vm, vr = res["variants"].get(m, {}).get(hard), res["variants"].get(ref, {}).get(hard)
    d = vm["accuracy"] - vr["accuracy"] if vm and vr else None
    if d is not None:
        src.add("checks.step_by_step_helps", [Path(src.root / f) for k in (f"variants.{m}.{hard}", f"variants.{ref}.{hard}")
                                              for f in src.map[k]["files"]], f"variants.{m}.{hard}.accuracy - variants.{ref}.{hard}.accuracy")
    out.append(K.check("step_by_step_helps", d, "positive", d is not None and d > 0, ["ii"],
                       f"student accuracy {m} − {ref} on the hard split"))
    # truncation of every evaluated model
    models = {f"student:{k}": v for k, v in res["variants"].items()}
    if res.get("student_base"):
        models["student_base"] = res["student_base"]
    models |= {f"ta:{k}": {"all": v} for k, v in ta.items()}
    for label, blocks in models.items():
        rate = max(x["truncated"] for x in blocks.values())
        gates = ["ii"] if label in (f"student:{m}", f"student:{b}") else ["i"] if label.startswith("ta:") else []
        prefix = {"student_base": "student_base."}.get(label) or (
            f"variants.{label.split(':', 1)[1]}" if label.startswith("student:") else f"ta.{label.split(':', 1)[1]}")
        src.add(f"checks.truncation:{label}", sorted({Path(src.root / f) for k, v in src.map.items() if k.startswith(prefix) for f in v["files"]}),
                "max over splits of the truncated share")
        out.append(K.check(f"truncation:{label}", rate, f"<= {fmt(cfg.max_truncation)}", rate <= cfg.max_truncation, gates,
                           "largest share of completions cut by max_new_tokens over the evaluated splits"))
    # data: sizes and the same problems for the claim-(ii) pair
    info = {k: _dataset_info(d) for k, d in cfg.data.items() if not empty_reason(d)}
    for k in cfg.data:
        n = info[k]["examples"] if k in info else None
        out.append(K.check(f"data_size:{k}", n, f">= {cfg.min_examples}", n is not None and n >= cfg.min_examples,
                           ["ii", "iii"] if k in (m, b) else [], "SFT examples in the variant's dataset"))
    same = info[m]["problems"] == info[b]["problems"] if m in info and b in info else None
    if same is not None:
        src.add("checks.same_problems", [info[m]["file"], info[b]["file"]], "1.0 if the sets of problem_id are equal, else 0.0")
    out.append(K.check("same_problems", None if same is None else float(same), "identical problem ids", bool(same), ["ii"],
                       f"the {m} and {b} datasets hold the same problem ids"))
    for k, v in info.items():
        src.add(f"checks.data_size:{k}", [v["file"]], "rows of the dataset (SftExample)")
    # students converged, and the untouched base beside them
    for k, dirs in cfg.train.items():
        if any(empty_reason(d) for d in ([dirs] if isinstance(dirs, str) else dirs)):
            continue
        curves = _train_curves(dirs)
        drops = [K.late_loss_drop(r.get("loss_curve") or [], z=cfg.converged_z) for _, r in curves]
        worst = None if any(x is None for x in drops) else max(drops)
        out.append(K.check(f"converged:{k}", worst, f"<= {fmt(cfg.max_late_loss_drop)}", worst is not None and worst <= cfg.max_late_loss_drop,
                           ["ii"] if k in (m, b) else [], "largest over seeds of the last quarter's share of the loss reduction, "
                           f"at its lower bound (m3 − m4 − {fmt(cfg.converged_z)}·SE) / (L_first − m4)"))
        res["variant_info"].setdefault(k, {}).update(
            seeds=len(curves), final_loss=[r["loss_curve"][-1]["loss"] if r.get("loss_curve") else None for _, r in curves],
            late_loss_drop_lower=drops, late_loss_drop=[K.late_loss_drop(r.get("loss_curve") or []) for _, r in curves],
            late_loss_drop_vs_final=[K.late_loss_drop(r.get("loss_curve") or [], vs_final=True) for _, r in curves])
        src.add(f"checks.converged:{k}", [f for f, _ in curves], "train_report.json loss_curve of each seed")
    if res.get("student_base"):
        src.add("checks.student_base", [Path(src.root / f) for k, v in src.map.items() if k.startswith("student_base.") for f in v["files"]],
                "1.0 when the untouched student base has eval samples")
    out.append(K.check("student_base", 1.0 if res.get("student_base") else None, "evaluated", bool(res.get("student_base")), ["ii"],
                       "the untouched student base was evaluated on the same splits"))
    for c in out:  # every value has a source; the specific ones were added above
        if c["value"] is not None and f"checks.{c['name']}" not in src.map:
            src.add(f"checks.{c['name']}", [], c["how"])
    for v, i in info.items():
        res["variant_info"].setdefault(v, {}).update(examples=i["examples"], problems=len(i["problems"]))
    src.add("variant_info", [i["file"] for i in info.values()] + [f for dirs in cfg.train.values() for f, _ in _train_curves(dirs)
                                                                   if f.is_file()],
            "examples/problems: rows and distinct problem ids of the dataset; mean_trace_tokens: the stats stage's "
            "stats.json tokens.mean (student tokenizer); seeds/final_loss/late_loss_drop: train_report.json of each seed")
    return out


def build_results(cfg: ReportConfig, root: Path) -> tuple[dict[str, Any], dict[str, list[float]]]:
    src = _Src(root)
    res: dict[str, Any] = {"title": cfg.title, "checks": [], "variants": {}, "variant_info": {}, "bpc": {}, "base_bpc": {}, "comparisons": {},
                           "claims": [], "empty": {},
                           "thresholds": {"length_range": list(cfg.length_range), "min_retention": cfg.min_retention,
                                          "max_task_vector": cfg.max_task_vector, "interpolation_band": [cfg.interpolation_margin, 1 - cfg.interpolation_margin],
                                          "max_truncation": cfg.max_truncation, "min_examples": cfg.min_examples,
                                          "max_late_loss_drop": cfg.max_late_loss_drop,
                                          "converged_z": cfg.converged_z}}
    src.add("thresholds", [], "report config (recipe)")
    hist: dict[str, list[float]] = {}
    per_var = {}
    models: dict[str, list[Sample]] = {}  # graded samples per model, for the efficiency section
    def empty(key: str, dirs: str | list[str] | None) -> bool:
        """Record (and report) a stage output that came out empty, e.g. no sample survived filtering."""
        for d in [dirs] if isinstance(dirs, str) else dirs or []:
            if why := empty_reason(d):
                res["empty"][key] = why
                src.add(f"empty.{key}", [Path(d) / MANIFEST], "the stage manifest says empty (empty_reason)")
                return True
        return False

    for name, d in cfg.evals.items():
        if not empty(f"variants.{name}", d):
            res["variants"][name], per_var[name], models[f"student: {name}"] = _variant_block(name, d, cfg, src)
    if cfg.student_base:
        res["student_base"], _, models["student base"] = _variant_block("", cfg.student_base, cfg, src, section="student_base")
    bpc_recs = {}
    for name, d in cfg.bpc.items():
        if not empty(f"bpc.{name}", d):
            res["bpc"][name], bpc_recs[name] = _bpc_block(name, Path(d), src, cfg)
    for name, d in cfg.base_bpc.items():
        if not empty(f"base_bpc.{name}", d):
            res["base_bpc"][name], _ = _bpc_block(name, Path(d), src, cfg, section="base_bpc")

    # the TA's samples: fine-tuned / merged on test (claim i), base / fine-tuned on hard (check)
    ta: dict[str, dict[str, Any]] = {}
    ta_samples: dict[str, list[Sample]] = {}
    ta_files: dict[str, list[Path]] = {}
    for key, d in (("finetuned", cfg.ta_finetuned), ("merged", cfg.ta_merged), ("base_hard", cfg.ta_base_hard),
                   ("finetuned_hard", cfg.ta_finetuned_hard)):
        if d and not empty(f"ta_{key}", d):
            ss, files = _load_many(d)
            ta_samples[key], ta_files[key] = ss, files
            label = {"finetuned": "TA fine-tuned", "merged": "TA merged", "base_hard": "TA base", "finetuned_hard": "TA fine-tuned"}[key]
            models[label] = models.get(label, []) + ss
            pp = per_problem(ss)
            vals = [a for a, _ in pp.values()]
            lo, hi = bootstrap_ci(vals, n_boot=cfg.n_boot, seed=cfg.seed)
            ta[key] = {"n": len(pp), "accuracy": sum(vals) / len(vals), "ci95": [lo, hi],
                       "mean_completion_tokens": sum(s.completion_tokens for s in ss) / len(ss),
                       "truncated": sum(s.finish_reason == "length" for s in ss) / len(ss)}
            src.add(f"ta.{key}", files, "as variants.*: accuracy over problems, bootstrap CI, mean tokens, truncation")
    res["ta"] = ta

    # paired comparisons of every variant against the baseline (per split and pooled)
    base = cfg.baseline
    if base in per_var:
        for name in per_var:
            if name == base:
                continue
            comp, pooled_a, pooled_b = {}, [], []
            for split, pp in per_var[name].items():
                pb = per_var[base].get(split, {})
                common = sorted(set(pp) & set(pb))
                a, b = [pp[p][0] for p in common], [pb[p][0] for p in common]
                pooled_a += a
                pooled_b += b
                comp[split] = {"n": len(common), **paired_bootstrap_diff(a, b, n_boot=cfg.n_boot, seed=cfg.seed)}
            comp["pooled"] = {"n": len(pooled_a), **paired_bootstrap_diff(pooled_a, pooled_b, n_boot=cfg.n_boot, seed=cfg.seed)}
            res["comparisons"][f"{name}_vs_{base}"] = comp
            src.add(f"comparisons.{name}_vs_{base}", [Path(src.root / src.map[f'variants.{name}.{s}']['files'][0]) for s in per_var[name]]
                    + [Path(src.root / src.map[f'variants.{base}.{s}']['files'][0]) for s in per_var[base]],
                    "paired_bootstrap_diff of per-problem accuracy (variant - baseline) over common problem ids")

    res["checks"] = compute_checks(cfg, res, ta, src)
    if cfg.stats and (Path(cfg.stats) / "stats.json").is_file():
        from micota.io import read_json

        for label, st in read_json(Path(cfg.stats) / "stats.json").get("datasets", {}).items():
            res["variant_info"].setdefault(label, {})["mean_trace_tokens"] = st["tokens"]["mean"]
        src.map["variant_info"]["files"].append(src.rel(Path(cfg.stats) / "stats.json"))

    # claim (i)
    ci: dict[str, Any] = {"id": "i", "statement": "The merged TA writes markedly shorter traces than the fine-tuned TA "
                          "while keeping most of its accuracy."}
    if "ta_finetuned" in res["empty"] or "ta_merged" in res["empty"]:
        verdict, why = C.INCONCLUSIVE, "the fine-tuned or merged TA produced no samples (" + "; ".join(
            res["empty"][k] for k in ("ta_finetuned", "ta_merged") if k in res["empty"]) + ")"
    elif "finetuned" in ta_samples and "merged" in ta_samples:
        ft, mg = ta_samples["finetuned"], ta_samples["merged"]
        pf, pm = per_problem(ft), per_problem(mg)
        common = sorted(set(pf) & set(pm))
        length = C.ratio_of_means_ci([pm[p][1] for p in common], [pf[p][1] for p in common], n_boot=cfg.n_boot, seed=cfg.seed)
        retention = C.ratio_of_means_ci([pm[p][0] for p in common], [pf[p][0] for p in common], n_boot=cfg.n_boot, seed=cfg.seed)
        verdict, why = C.verdict_claim_i(length, retention, cfg.length_range, cfg.min_retention)
        ci["numbers"] = {
            "n": len(common),
            "finetuned_accuracy": sum(pf[p][0] for p in common) / max(1, len(common)),
            "merged_accuracy": sum(pm[p][0] for p in common) / max(1, len(common)),
            "finetuned_mean_tokens": sum(pf[p][1] for p in common) / max(1, len(common)),
            "merged_mean_tokens": sum(pm[p][1] for p in common) / max(1, len(common)),
            "length_ratio": length[0], "length_ratio_ci95": [length[1], length[2]],
            "accuracy_retention": retention[0], "accuracy_retention_ci95": [retention[1], retention[2]],
        }
        src.add("claims.i", ta_files["finetuned"] + ta_files["merged"], "per-problem means over common problems; ratios = "
                "ratio of means (merged / fine-tuned) with a paired bootstrap CI")
        hist["fine-tuned TA"] = [float(s.completion_tokens) for s in ft]
        hist["merged TA"] = [float(s.completion_tokens) for s in mg]
    else:
        verdict, why = C.INCONCLUSIVE, "no fine-tuned/merged TA samples in the pipeline"
    _finish_claim(res, ci, verdict, why)

    # claim (ii)
    cii: dict[str, Any] = {"id": "ii", "statement": f"Students trained on Mid-CoT ({cfg.method}) beat students trained on "
                           f"long CoT ({base})."}
    comp = res["comparisons"].get(f"{cfg.method}_vs_{base}")
    if comp:
        pm, pb = per_var[cfg.method], per_var[base]
        common = {sp: sorted(set(pm[sp]) & set(pb.get(sp, {}))) for sp in pm}
        macro = paired_bootstrap_macro({sp: [pm[sp][p][0] for p in ps] for sp, ps in common.items()},
                                       {sp: [pb[sp][p][0] for p in ps] for sp, ps in common.items()},
                                       n_boot=cfg.n_boot, seed=cfg.seed)
        p = comp["pooled"]
        verdict, why = C.verdict_positive((macro["diff"], macro["lo"], macro["hi"]), better="higher")
        cii["numbers"] = {"n": macro["n_problems"], "splits": macro["n_benchmarks"], "accuracy_diff": macro["diff"],
                          "accuracy_diff_ci95": [macro["lo"], macro["hi"]],
                          "pooled_accuracy_diff": p["diff"], "pooled_accuracy_diff_ci95": [p["lo"], p["hi"]]}
        src.add("claims.ii", [], f"macro over splits: paired_bootstrap_macro (problems resampled within each split, "
                                 f"unweighted mean of the per-split differences); pooled_* = comparisons.{cfg.method}_vs_{base}.pooled")
        src.map["claims.ii"]["files"] = src.map[f"comparisons.{cfg.method}_vs_{base}"]["files"]
    else:
        verdict, why = C.INCONCLUSIVE, _missing_why(res, "variants", cfg.method, base, "not both evaluated")
    _finish_claim(res, cii, verdict, why)

    # claim (iii)
    ciii: dict[str, Any] = {"id": "iii", "statement": f"Mid-CoT ({cfg.method}) has lower BPC than long CoT ({base}) "
                            "under the student base."}
    if cfg.method in bpc_recs and base in bpc_recs:
        a, b = bpc_recs[cfg.method], bpc_recs[base]
        d = C.weighted_ratio_diff_ci([r.nll_bits for r in a], [r.chars for r in a], [r.nll_bits for r in b],
                                     [r.chars for r in b], n_boot=cfg.n_boot, seed=cfg.seed)
        verdict, why = C.verdict_positive(d, better="lower")
        ciii["numbers"] = {"bpc_method": res["bpc"][cfg.method]["bpc"], "bpc_baseline": res["bpc"][base]["bpc"],
                           "bpc_diff": d[0], "bpc_diff_ci95": [d[1], d[2]]}
        src.add("claims.iii", [Path(cfg.bpc[cfg.method]) / "bpc.jsonl", Path(cfg.bpc[base]) / "bpc.jsonl"],
                "character-weighted BPC difference (method - baseline), independent bootstrap over records")
    else:
        verdict, why = C.INCONCLUSIVE, _missing_why(res, "bpc", cfg.method, base, "no BPC for both")
    _finish_claim(res, ciii, verdict, why)

    if cfg.bases:
        rep = Path(cfg.bases) / "pretrain_report.json"
        from micota.io import read_json

        res["bases"] = {role: {k.removeprefix("accuracy_"): v["accuracy"] for k, v in m.items() if k.startswith("accuracy_")}
                        | {"params": m["params"]} for role, m in read_json(rep)["models"].items()}
        src.add("bases", [rep], "greedy accuracy of each base per split (and per style prompt) and its parameter count, from the pretrain stage")
    if cfg.merge_search:
        ms = Path(cfg.merge_search) / "merge_search.json"
        if ms.is_file():
            from micota.io import read_json

            data = read_json(ms)
            chosen = data.get("chosen", {})
            res["merge_search"] = {k: v for k, v in chosen.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            src.add("merge_search", [ms], "the chosen point of the merge search", pointer="/chosen")
            sel = data.get("selection") or {}
            if "target_reached" in sel:  # older outputs have only an ambiguous "met"
                res["merge_selection"] = {k: sel.get(k) for k in ("rule", "target", "length_tolerance", "tolerance",
                                                                   "length_ratio", "target_reached", "within_tolerance", "met")}
                src.add("merge_selection", [ms], "whether the chosen point reached the length target and stayed within "
                        "the accuracy tolerance", pointer="/selection")
            res["merge_curve"] = {"base": data.get("base"), "finetuned": data.get("finetuned"),
                                  "points": [{k: p.get(k) for k in ("method", "weight", "density", "accuracy", "mean_tokens",
                                                                    "truncated", "reference")} for p in data.get("points", [])]}
            src.add("merge_curve", [ms], "every probed point of the merge search, with the base and fine-tune references")
    res["sources"] = src.map
    return res, hist, models


def _finish_claim(res: dict[str, Any], claim: dict[str, Any], verdict: str, why: str) -> None:
    """Gate the computed verdict by the claim's validity checks and append it."""
    failed = K.failed_for(res["checks"], claim["id"])
    verdict, why = C.gate(verdict, why, failed)
    claim.update(verdict=verdict, why=why, failed_checks=failed)
    res["claims"].append(claim)


def _missing_why(res: dict[str, Any], section: str, method: str, base: str, default: str) -> str:
    gone = [f"{v} is empty: {res['empty'][f'{section}.{v}']}" for v in (method, base) if f"{section}.{v}" in res["empty"]]
    return "; ".join(gone) if gone else f"{default} {method!r} and {base!r}"


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


EFFICIENCY_KEYS = ("n_samples", "accuracy", "mean_tokens", "tokens_per_correct", "reflections_per_1k_tokens",
                   "reflections_per_response", "outcome_efficiency")


def _efficiency(res: dict[str, Any], models: dict[str, list[Sample]], cfg: ReportConfig, tmp: Path) -> None:
    """Efficiency per model and split (report.efficiency), and which learnability metric tracked the
    students' accuracy across variants (Spearman over variants; needs ≥ 3)."""
    from micota.io import read_json
    from micota.report.efficiency import efficiency_section, learnability_section

    _, eff = efficiency_section(models, tmp)
    res["efficiency"] = {m: {b: {k: v.get(k) for k in EFFICIENCY_KEYS} for b, v in by.items()} for m, by in eff["models"].items()}
    res["sources"]["efficiency"] = {"files": sorted({f for k, v in res["sources"].items()
                                                     if k.startswith(("variants.", "ta.", "student_base.")) for f in v["files"]}),
                                    "how": "micota.scoring.efficiency.efficiency_metrics per model and split (sample.source)"}
    metrics = {}
    for v, d in cfg.bpc.items():
        f = Path(d) / "summary.json"
        if v in res["variants"] and f.is_file():
            metrics[v] = {k: x for k, x in read_json(f).items() if isinstance(x, (int, float)) and not isinstance(x, bool)
                          and k.endswith(("_mean", "_q50", "_weighted"))}
    acc = {v: sum(b["accuracy"] for b in res["variants"][v].values()) / len(res["variants"][v]) for v in metrics}
    if metrics:
        _, learn = learnability_section(metrics, acc)
        res["learnability"] = learn
        res["sources"]["learnability"] = {"files": [os.path.relpath(Path(cfg.bpc[v]) / "summary.json", tmp.parent) for v in metrics],
                                          "how": "Spearman rank correlation over variants of each bpc summary metric with the "
                                                 "students' accuracy (mean over splits of variants.*.accuracy)"}


def build_report(cfg: ReportConfig) -> Path:
    """Write REPORT.md, results.json and plots into ``cfg.out``; returns the directory."""
    from micota.report.plots import plot_histograms, plot_merge_curve

    t0 = time.time()
    out = Path(cfg.out)
    if not cfg.evals:
        raise UserError("report: evals is empty (give at least one variant's eval directory)")
    res, hist, models = build_results(cfg, out.parent)
    inputs = {f"eval:{k}:{i}": v for k, vs in cfg.evals.items() for i, v in enumerate([vs] if isinstance(vs, str) else vs)}
    inputs |= {f"bpc:{k}": v for k, v in cfg.bpc.items()}
    with atomic_dir(out, overwrite=True) as tmp:
        figures = []
        if hist:
            plot_histograms(hist, tmp / "lengths_ta.png", title="Completion tokens: fine-tuned vs merged TA")
            figures.append("lengths_ta.png")
        if res.get("merge_curve") and plot_merge_curve(res["merge_curve"], tmp / "merge_curve.png"):
            figures.append("merge_curve.png")
        if models:
            _efficiency(res, models, cfg, tmp)
            figures.append("accuracy_vs_tokens.png")
        res = _finite(res)
        for name, d in (("stats", cfg.stats), ("merge", cfg.merge_search)):
            for png in sorted(Path(d).glob("*.png")) if d else []:
                shutil.copyfile(png, tmp / f"{name}_{png.name}")
                figures.append(f"{name}_{png.name}")
        res["figures"] = figures
        atomic_write_json(tmp / "results.json", res)
        atomic_write_text(tmp / "REPORT.md", render_markdown(res))
        write_manifest(tmp, stage="report", config=cfg, inputs=inputs, started_at=t0,
                       counts={"variants": len(cfg.evals), "claims": len(res["claims"])},
                       extra={"verdicts": {c["id"]: c["verdict"] for c in res["claims"]}})
    return out
