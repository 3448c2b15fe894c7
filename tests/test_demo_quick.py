"""The quick miniature demo end to end (what CI runs): `micota demo --quick` as a real subprocess.

Checks the report's structure, that every number in it traces to a stage output, that every
validity check and the gating of every verdict recompute independently from the stored stage
outputs (plain JSON/safetensors reading here, no micota.report code), that no claim whose checks
fail is called reproduced, and that a second run with the same seed gives the same numbers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from conftest import QUICK_THREADS
from test_pipeline_runner import check_report_traces

VARIANTS = {"long", "ta_long", "mid", "short", "mix"}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _samples(d: Path) -> list[dict]:
    return [r for f in sorted(d.glob("samples-*.jsonl")) for r in _rows(f)]


def _acc(rows: list[dict]) -> float:
    """Mean over problems of the mean correct over that problem's samples; truncated = wrong."""
    by: dict[str, list[bool]] = {}
    for r in rows:
        by.setdefault(r["problem_id"], []).append(bool(r["correct"]) and r["finish_reason"] != "length")
    return sum(sum(v) / len(v) for v in by.values()) / len(by)


def _tv_ratio(base: Path, ft: Path) -> float:
    from safetensors.numpy import load_file

    b = {k: v for f in base.glob("*.safetensors") for k, v in load_file(str(f)).items()}
    f = {k: v for p in ft.glob("*.safetensors") for k, v in load_file(str(p)).items()}
    num = sum(float(((f[k].astype(np.float64) - b[k].astype(np.float64)) ** 2).sum()) for k in b if b[k].dtype.kind == "f")
    den = sum(float((b[k].astype(np.float64) ** 2).sum()) for k in b if b[k].dtype.kind == "f")
    return math.sqrt(num / den)


def recompute_checks(out: Path) -> dict[str, bool]:
    """Every check of results.json recomputed from the stage outputs named by plan.json."""
    plan = json.loads((out / "plan.json").read_text())["stages"]
    d = lambda name: out / plan[name]["dir"]  # noqa: E731
    res = json.loads((out / "results.json").read_text())
    th = res["thresholds"]
    def student(v: str, split: str) -> list[dict]:
        """Both seeds' samples of variant v on one split."""
        return [r for s in (f"student_test.{v}", f"student_hard.{v}", f"student_test_b.{v}", f"student_hard_b.{v}")
                for r in _graded(d(s)) if r["source"] == split]

    got: dict[str, bool] = {}
    got["task_vector"] = _tv_ratio(out / plan["pretrain"]["dir"] / "ta", d("ta_sft")) <= th["max_task_vector"]
    ms = json.loads((d("merge") / "merge_search.json").read_text())
    lin = [p for p in ms["points"] if p.get("reference") and p["method"] == "linear" and p["weight"] == 0.5]
    pos = (lin[0]["mean_tokens"] - ms["base"]["mean_tokens"]) / (ms["finetuned"]["mean_tokens"] - ms["base"]["mean_tokens"]) \
        if lin and ms["finetuned"]["mean_tokens"] != ms["base"]["mean_tokens"] else None
    lo, hi = th["interpolation_band"]
    got["interpolation"] = pos is not None and lo <= pos <= hi
    for label, stage in [(f"student/{v}", f"bpc.{v}") for v in VARIANTS] + [
            ("ta/long", "bpc_ta_long"), ("ta/mid", "bpc_ta_mid"), ("ta/short", "bpc_ta_short"), ("student/oracle-mid", "bpc_student_mid")]:
        if stage not in plan or not (d(stage) / "bpc.jsonl").is_file():
            continue
        recs = _rows(d(stage) / "bpc.jsonl")
        model = json.loads((d(stage) / "manifest.json").read_text())["config"]["model"]
        log2v = math.log2(json.loads((Path(model) / "config.json").read_text())["vocab_size"])
        bpt = sum(r["nll_bits"] for r in recs) / sum(r["tokens"] for r in recs)
        got[f"base_knows:{label}"] = bpt < log2v
        if label in ("student/mid", "student/long"):
            bpc = sum(r["nll_bits"] for r in recs) / sum(r["chars"] for r in recs)
            got[f"bpc_uniform:{label.split('/')[1]}"] = bpc < log2v * sum(r["tokens"] for r in recs) / sum(r["chars"] for r in recs)
    ft_hard = _acc(_graded(d("ta_hard")))
    got["long_cot_helps"] = ft_hard - _acc(_graded(d("ta_base_hard"))) >= 0 and ft_hard > 0
    hard = "world-hard"
    if all(_nonempty(d(f"student_sft.{v}")) for v in ("mid", "short")):
        got["step_by_step_helps"] = _acc(student("mid", hard)) - _acc(student("short", hard)) > 0
    for v in VARIANTS:
        if _nonempty(d(f"student_sft.{v}")):
            rows = student(v, "world-test") + student(v, hard)
            rate = max(sum(r["finish_reason"] == "length" for r in rs) / len(rs)
                       for rs in ([r for r in rows if r["source"] == s] for s in ("world-test", hard)))
            got[f"truncation:student:{v}"] = rate <= th["max_truncation"]
            drops = []
            for s in (f"student_sft.{v}", f"student_sft_b.{v}"):
                losses = [p["loss"] for p in json.loads((d(s) / "train_report.json").read_text())["loss_curve"]]
                q = len(losses) // 4
                q3, q4 = np.array(losses[-2 * q:-q]), np.array(losses[-q:])
                total = losses[0] - q4.mean() if q >= 2 else 0
                se = np.sqrt(q3.var(ddof=1) / len(q3) + q4.var(ddof=1) / len(q4)) if q >= 2 else 0
                drops.append((q3.mean() - q4.mean() - th["converged_z"] * se) / total if total > 0 else None)
            got[f"converged:{v}"] = None not in drops and max(drops) <= th["max_late_loss_drop"]
    base_rows = _graded(d("student_base_test")) + _graded(d("student_base_hard"))
    got["truncation:student_base"] = max(sum(r["finish_reason"] == "length" for r in rs) / len(rs) for rs in (
        [r for r in base_rows if r["source"] == s] for s in ("world-test", hard))) <= th["max_truncation"]
    for key, stage in (("finetuned", "ta_test"), ("merged", "merged_test"), ("base_hard", "ta_base_hard"), ("finetuned_hard", "ta_hard")):
        rows = _graded(d(stage))
        got[f"truncation:ta:{key}"] = sum(r["finish_reason"] == "length" for r in rows) / len(rows) <= th["max_truncation"]
    data_stage = {"long": "long_matched", "ta_long": "ta_long_filter", "mid": "mid_filter", "short": "short_matched", "mix": "mix"}
    ids = {}
    for v, stage in data_stage.items():
        f = d(stage) / "data.jsonl"
        rows = _rows(f) if f.is_file() else []
        ids[v] = sorted({r["problem_id"] for r in rows})
        got[f"data_size:{v}"] = len(rows) >= th["min_examples"]
    got["same_problems"] = bool(ids["mid"]) and ids["mid"] == ids["long"]
    got["student_base"] = bool(base_rows)
    return got


def _nonempty(d: Path) -> bool:
    return not json.loads((d / "manifest.json").read_text()).get("empty")


def _graded(d: Path) -> list[dict]:
    """Samples with grades: the generate output is ungraded; grade its boxed answer exactly as the
    world's answers are integers (last \\boxed{...} equal to the reference)."""
    rows = _samples(d)
    for r in rows:
        if r.get("correct") is None:
            text = r["completion"]
            i = text.rfind("\\boxed{")
            got = text[i + 7:text.find("}", i)] if i >= 0 and text.find("}", i) > 0 else None
            r["correct"] = got is not None and got.strip() == str(r["reference"]).strip()
    return rows


def check_results(out: Path, stdout: str = "") -> dict:
    res = json.loads((out / "results.json").read_text())
    check_report_traces(out)
    assert [c["id"] for c in res["claims"]] == ["i", "ii", "iii"]
    recomputed = recompute_checks(out)
    listed = {c["name"]: c["passed"] for c in res["checks"]}
    for name, ok in recomputed.items():
        assert name in listed, f"check {name} missing from results.json"
        assert listed[name] == ok, f"check {name}: results.json says {listed[name]}, recomputed {ok}"
    assert set(listed) <= set(recomputed) | {"interpolation"}, set(listed) - set(recomputed)
    for c in res["claims"]:
        failed = sorted(ch["name"] for ch in res["checks"] if c["id"] in ch["claims"] and not recomputed.get(ch["name"], ch["passed"]))
        assert sorted(c["failed_checks"]) == failed, (c["id"], c["failed_checks"], failed)
        if failed:
            assert c["verdict"] == "not testable", c
            for line in stdout.splitlines():
                if line.startswith(f"claim ({c['id']})"):
                    assert "reproduced" not in line, line
        else:
            assert c["verdict"] in ("reproduced", "not reproduced", "inconclusive")
            nums = c.get("numbers") or {}
            if c["id"] in ("ii", "iii") and nums:
                lo, hi = nums["accuracy_diff_ci95"] if c["id"] == "ii" else nums["bpc_diff_ci95"]
                good, bad = (lo > 0, hi < 0) if c["id"] == "ii" else (hi < 0, lo > 0)
                assert c["verdict"] == ("reproduced" if good else "not reproduced" if bad else "inconclusive")
    return res


def _numbers(x, path=""):
    if isinstance(x, dict):
        return {k2: v2 for k, v in x.items() if k not in ("sources", "figures") for k2, v2 in _numbers(v, f"{path}.{k}").items()}
    if isinstance(x, list):
        return {k2: v2 for i, v in enumerate(x) for k2, v2 in _numbers(v, f"{path}[{i}]").items()}
    return {path: x}


def test_quick_demo_runs_end_to_end_gates_its_claims_and_is_deterministic(quick_demo, tmp_path, cli):
    out, r = quick_demo
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| variant |" in r.stdout and "claim (i):" in r.stdout and "validity checks:" in r.stdout
    for f in ("REPORT.md", "results.json"):
        assert (out / f).is_file()
    res = check_results(out, r.stdout)
    # every data variant has a student result, or is reported empty with the reason
    assert {k for k in res["variants"]} | {k.split(".", 1)[1] for k in res["empty"] if k.startswith("variants.")} == VARIANTS
    for name, block in res["variants"].items():
        assert set(block) == {"world-test", "world-hard"}, name
        for split in block.values():
            assert 0.0 <= split["accuracy"] <= 1.0 and split["ci95"][0] <= split["accuracy"] <= split["ci95"][1]
            assert split["samples"] == 2 * split["n"]  # two training seeds, one greedy sample each
    md = (out / "REPORT.md").read_text()
    assert md.index("## Validity checks") < md.index("## The paper's claims")
    # the world and the System-1 bases were built by the pipeline, with manifests
    plan = json.loads((out / "plan.json").read_text())
    for stage in ("world", "pretrain", "ta_sft", "merge", "report"):
        d = out / plan["stages"][stage]["dir"]
        assert json.loads((d / "manifest.json").read_text())["complete"], stage
    # a second run reuses every finished stage
    again = cli("run", "--dry-run", "--out", str(out), str(_recipe()))
    statuses = [line.split()[2] for line in again.stdout.splitlines() if line.rstrip().endswith("]")]
    assert again.returncode == 0 and len(statuses) == len(plan["stages"]), again.stderr[-2000:]
    assert set(statuses) == {"cached"}, again.stderr[-2000:]
    # the same seed from scratch gives the same numbers, whatever OMP_NUM_THREADS says (the recipe pins threads)
    out2 = tmp_path / "demo-again"
    r2 = cli("demo", "--quick", "--out", str(out2), timeout=900, env={"OMP_NUM_THREADS": "1" if QUICK_THREADS != "1" else "2"})
    assert r2.returncode == 0, r2.stderr[-3000:]
    a, b = _numbers(res), _numbers(json.loads((out2 / "results.json").read_text()))
    diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    assert not diff, [(k, a.get(k), b.get(k)) for k in diff[:10]]


def _recipe():
    from micota.demo import recipe_path

    return recipe_path(quick=True)
