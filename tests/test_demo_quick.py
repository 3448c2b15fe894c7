"""The quick miniature demo end to end (what CI runs): `micota demo --quick` as a real subprocess.

Checks the report's structure, that every number in it traces to a stage output, and that the
claims' verdicts are the computed ones (recomputed here from results.json's own CI numbers).
"""

from __future__ import annotations

import json

from test_pipeline_runner import check_report_traces

VARIANTS = {"long", "ta_long", "mid", "short", "mix"}


def test_quick_demo_runs_end_to_end_and_its_report_traces_to_stage_outputs(quick_demo, cli):
    out, r = quick_demo
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| variant |" in r.stdout and "claim (i):" in r.stdout
    for f in ("REPORT.md", "results.json"):
        assert (out / f).is_file()
    check_report_traces(out)
    res = json.loads((out / "results.json").read_text())
    # every data variant has a student result, or is reported empty with the reason
    assert {k for k in res["variants"]} | {k.split(".", 1)[1] for k in res["empty"] if k.startswith("variants.")} == VARIANTS
    for name, block in res["variants"].items():
        assert set(block) == {"world-test", "world-hard"}, name
        for split in block.values():
            assert 0.0 <= split["accuracy"] <= 1.0 and split["ci95"][0] <= split["accuracy"] <= split["ci95"][1]
    assert [c["id"] for c in res["claims"]] == ["i", "ii", "iii"]
    assert all(c["verdict"] in ("reproduced", "not reproduced", "inconclusive") for c in res["claims"])
    iii = res["claims"][2]
    if "numbers" in iii:  # the BPC verdict follows from its own CI
        lo, hi = iii["numbers"]["bpc_diff_ci95"]
        expect = "reproduced" if hi < 0 else "not reproduced" if lo > 0 else "inconclusive"
        assert iii["verdict"] == expect
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


def _recipe():
    from micota.demo import recipe_path

    return recipe_path(quick=True)
