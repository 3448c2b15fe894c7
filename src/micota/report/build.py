"""``report`` stage: REPORT.md + results.json (+ PNGs) from the pipeline's stage outputs.

Inputs are stage output directories: per variant the student's eval (an ``eval`` output with
``graded.jsonl``, or a ``generate`` output whose samples are graded here); the fine-tuned and the
merged TA's samples on the same problems (claim i); ``bpc`` outputs per dataset (claim iii); a
``stats`` output and a ``merge_search`` output whose plots are copied.

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
from micota.generation.runner import SHARD_GLOB
from micota.io import atomic_dir, atomic_write_json, atomic_write_text
from micota.manifest import MANIFEST, empty_reason, write_manifest
from micota.records import BpcRecord, Sample, read_jsonl
from micota.report import claims as C
from micota.report.render import render_markdown
from micota.scoring.stats import bootstrap_ci, paired_bootstrap_diff


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
    merge_search: str | None = Field(None, description="A merge_search output directory (curve.png copied, chosen point reported).")
    bases: str | None = Field(None, description="A pretrain output directory (the miniature world's System-1 bases): their accuracies are reported.")
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


def _sample_files(d: Path) -> list[Path]:
    if not d.is_dir():
        raise UserError(f"{d}: no such stage output directory")
    if (d / "graded.jsonl").is_file():
        return [d / "graded.jsonl"]
    files = sorted(d.rglob(SHARD_GLOB))
    if not files:
        raise UserError(f"{d}: no graded.jsonl or samples-*.jsonl")
    return files


def load_graded(d: str | Path) -> tuple[list[Sample], list[Path]]:
    """Samples of an eval/generate output, graded (ungraded ones are graded here, by source's mode)."""
    files = _sample_files(Path(d))
    rows: list[Sample] = [s for f in files for s in read_jsonl(f, Sample, drop_torn_tail=True)]
    todo = [i for i, s in enumerate(rows) if s.correct is None]
    if todo:
        from micota.grading import grade_samples  # mode=None: each sample's benchmark mode

        for i, s in zip(todo, grade_samples([rows[i] for i in todo])):
            rows[i] = s
    rows = [s.model_copy(update={"correct": False}) if s.finish_reason == "length" else s for s in rows]
    return rows, files


def per_problem(samples: list[Sample]) -> dict[str, tuple[float, float]]:
    """problem_id -> (mean correct, mean completion tokens) over its samples."""
    acc: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        acc[s.problem_id].append(s)
    return {p: (sum(bool(s.correct) for s in v) / len(v), sum(s.completion_tokens for s in v) / len(v)) for p, v in acc.items()}


def _variant_block(name: str, dirs: str | list[str], cfg: ReportConfig, src: _Src) -> tuple[dict[str, Any], dict[str, dict[str, tuple[float, float]]]]:
    samples, files = [], []
    for d in [dirs] if isinstance(dirs, str) else dirs:
        ss, fs = load_graded(d)
        samples += ss
        files += fs
    by_split: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_split[s.source or "all"].append(s)
    block, pp_all = {}, {}
    for split, ss in sorted(by_split.items()):
        pp = per_problem(ss)
        pp_all[split] = pp
        vals = [a for a, _ in pp.values()]
        lo, hi = bootstrap_ci(vals, n_boot=cfg.n_boot, seed=cfg.seed)
        key = f"variants.{name}.{split}"
        block[split] = {"n": len(pp), "accuracy": sum(vals) / len(vals), "ci95": [lo, hi],
                        "mean_completion_tokens": sum(s.completion_tokens for s in ss) / len(ss)}
        src.add(key, files, f"samples with source={split!r}: accuracy = mean over problems of mean(correct); "
                             "ci95 = bootstrap_ci over problems; mean_completion_tokens = mean over samples")
    return block, pp_all


def _bpc_block(name: str, d: Path, src: _Src, cfg: ReportConfig) -> tuple[dict[str, Any], list[BpcRecord]]:
    f = Path(d) / "bpc.jsonl"
    recs = read_jsonl(f, BpcRecord)
    if not recs:
        raise UserError(f"{f}: no records")
    bits, chars = sum(r.nll_bits for r in recs), sum(r.chars for r in recs)
    lo, hi = bootstrap_ci([r.bpc for r in recs], n_boot=cfg.n_boot, seed=cfg.seed)
    src.add(f"bpc.{name}", [f], "bpc = sum(nll_bits)/sum(chars); mean_record_bpc = mean(bpc); "
                                "ci95 = bootstrap_ci of per-record bpc; mean_chars = mean(chars)")
    return {"n": len(recs), "bpc": bits / chars, "mean_record_bpc": sum(r.bpc for r in recs) / len(recs),
            "ci95": [lo, hi], "mean_chars": chars / len(recs)}, recs


def build_results(cfg: ReportConfig, root: Path) -> tuple[dict[str, Any], dict[str, list[float]]]:
    src = _Src(root)
    res: dict[str, Any] = {"title": cfg.title, "variants": {}, "bpc": {}, "comparisons": {}, "claims": [], "empty": {},
                           "thresholds": {"length_range": list(cfg.length_range), "min_retention": cfg.min_retention}}
    src.add("thresholds", [], "report config (recipe)")
    hist: dict[str, list[float]] = {}
    per_var = {}
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
            res["variants"][name], per_var[name] = _variant_block(name, d, cfg, src)
    bpc_recs = {}
    for name, d in cfg.bpc.items():
        if not empty(f"bpc.{name}", d):
            res["bpc"][name], bpc_recs[name] = _bpc_block(name, Path(d), src, cfg)

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

    # claim (i)
    ci: dict[str, Any] = {"id": "i", "statement": "The merged TA writes markedly shorter traces than the fine-tuned TA "
                          "while keeping most of its accuracy."}
    ta_empty = empty("ta_finetuned", cfg.ta_finetuned) | empty("ta_merged", cfg.ta_merged)
    if ta_empty:
        verdict, why = C.INCONCLUSIVE, "the fine-tuned or merged TA produced no samples (" + "; ".join(
            res["empty"][k] for k in ("ta_finetuned", "ta_merged") if k in res["empty"]) + ")"
    elif cfg.ta_finetuned and cfg.ta_merged:
        (ft, ft_files), (mg, mg_files) = load_graded(cfg.ta_finetuned), load_graded(cfg.ta_merged)
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
        src.add("claims.i", ft_files + mg_files, "per-problem means over common problems; ratios = ratio of means "
                                                 "(merged / fine-tuned) with a paired bootstrap CI")
        hist["fine-tuned TA"] = [float(s.completion_tokens) for s in ft]
        hist["merged TA"] = [float(s.completion_tokens) for s in mg]
    else:
        verdict, why = C.INCONCLUSIVE, "no fine-tuned/merged TA samples in the pipeline"
    ci.update(verdict=verdict, why=why)
    res["claims"].append(ci)

    # claim (ii)
    cii: dict[str, Any] = {"id": "ii", "statement": f"Students trained on Mid-CoT ({cfg.method}) beat students trained on "
                           f"long CoT ({base})."}
    comp = res["comparisons"].get(f"{cfg.method}_vs_{base}")
    if comp:
        p = comp["pooled"]
        verdict, why = C.verdict_positive((p["diff"], p["lo"], p["hi"]), better="higher")
        cii["numbers"] = {"n": p["n"], "accuracy_diff": p["diff"], "accuracy_diff_ci95": [p["lo"], p["hi"]]}
        src.add("claims.ii", [], f"= comparisons.{cfg.method}_vs_{base}.pooled")
        src.map["claims.ii"]["files"] = src.map[f"comparisons.{cfg.method}_vs_{base}"]["files"]
    else:
        verdict, why = C.INCONCLUSIVE, _missing_why(res, "variants", cfg.method, base, "not both evaluated")
    cii.update(verdict=verdict, why=why)
    res["claims"].append(cii)

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
    ciii.update(verdict=verdict, why=why)
    res["claims"].append(ciii)

    if cfg.bases:
        rep = Path(cfg.bases) / "pretrain_report.json"
        from micota.io import read_json

        res["bases"] = {role: {k.removeprefix("accuracy_"): v["accuracy"] for k, v in m.items() if k.startswith("accuracy_")}
                        | {"params": m["params"]} for role, m in read_json(rep)["models"].items()}
        src.add("bases", [rep], "greedy accuracy of each base per split and its parameter count, from the pretrain stage")
    if cfg.merge_search:
        ms = Path(cfg.merge_search) / "merge_search.json"
        if ms.is_file():
            from micota.io import read_json

            chosen = read_json(ms).get("chosen", {})
            res["merge_search"] = {k: v for k, v in chosen.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            src.add("merge_search", [ms], "the chosen point of the merge search", pointer="/chosen")
    res["sources"] = src.map
    return res, hist


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


def build_report(cfg: ReportConfig) -> Path:
    """Write REPORT.md, results.json and plots into ``cfg.out``; returns the directory."""
    from micota.report.plots import plot_histograms

    t0 = time.time()
    out = Path(cfg.out)
    if not cfg.evals:
        raise UserError("report: evals is empty (give at least one variant's eval directory)")
    res, hist = build_results(cfg, out.parent)
    res = _finite(res)
    inputs = {f"eval:{k}:{i}": v for k, vs in cfg.evals.items() for i, v in enumerate([vs] if isinstance(vs, str) else vs)}
    inputs |= {f"bpc:{k}": v for k, v in cfg.bpc.items()}
    with atomic_dir(out, overwrite=True) as tmp:
        figures = []
        if hist:
            plot_histograms(hist, tmp / "lengths_ta.png", title="Completion tokens: fine-tuned vs merged TA")
            figures.append("lengths_ta.png")
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
