"""Pipeline runner: caching, resume after SIGKILL, change propagation, dry-run reasons, YAML errors."""

from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from micota.errors import UserError
from micota.pipeline.planner import make_plan
from micota.pipeline.runner import run_pipeline
from micota.pipeline.schema import load_pipeline, parse_pipeline


def _problems(path: Path, n: int, start: int = 0) -> Path:
    with open(path, "w") as f:
        for i in range(start, start + n):
            f.write(json.dumps({"id": f"q{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n")
    return path


def _pipeline(tmp: Path, model: Path, *, n_a: int = 4, n_b: int = 4, tokens_b: int = 8, batch: int = 4,
              out: str = "out") -> Path:
    spec = {
        "name": "tiny",
        "out": str(tmp / out),
        "models": {"m": str(model)},
        "data": {"a": str(_problems(tmp / "a.jsonl", n_a)), "b": str(_problems(tmp / "b.jsonl", n_b, 100))},
        "stages": {
            "gen_a": {"kind": "generate", "inputs": {"model": "${models.m}", "problems": "${data.a}"},
                      "max_new_tokens": 8, "batch_size": batch},
            "gen_b": {"kind": "generate", "inputs": {"model": "${models.m}", "problems": "${data.b}"},
                      "max_new_tokens": tokens_b, "batch_size": batch},
            "report": {"kind": "report", "inputs": {"evals": {"long": "${gen_a}", "mid": "${gen_b}"}},
                       "baseline": "long", "method": "mid", "n_boot": 200},
        },
    }
    p = tmp / f"pipe-{out}.yaml"
    p.write_text(yaml.safe_dump(spec, sort_keys=False))
    return p


def _manifest_stamp(d: Path) -> tuple[bytes, int]:
    m = d / "manifest.json"
    return m.read_bytes(), m.stat().st_mtime_ns


def test_change_one_parameter_reruns_that_stage_and_dependants_only(tmp_path, tiny_model_dir, capsys):
    p = _pipeline(tmp_path, tiny_model_dir)
    plan = run_pipeline(p)
    dirs = {i.name: i.dir for i in plan.instances}
    stamps = {n: _manifest_stamp(d) for n, d in dirs.items()}
    assert (tmp_path / "out" / "REPORT.md").is_file() and (tmp_path / "out" / "results.json").is_file()
    again = make_plan(load_pipeline(p))
    assert [i.status for i in again.instances] == ["cached"] * 3

    _pipeline(tmp_path, tiny_model_dir, tokens_b=6)
    dry = make_plan(load_pipeline(p))
    st = {i.name: (i.status, i.reason) for i in dry.instances}
    assert st["gen_a"][0] == "cached"
    assert st["gen_b"] == ("run", "config changed: max_new_tokens")
    assert st["report"] == ("run", "input changed: gen_b")
    plan2 = run_pipeline(p)
    d2 = {i.name: i.dir for i in plan2.instances}
    assert d2["gen_a"] == dirs["gen_a"] and _manifest_stamp(dirs["gen_a"]) == stamps["gen_a"]
    assert d2["gen_b"] != dirs["gen_b"] and d2["report"] != dirs["report"]
    assert _manifest_stamp(dirs["gen_b"]) == stamps["gen_b"]  # the old output is kept, untouched
    # --only runs one stage; --from recomputes a stage and its dependants
    before = _manifest_stamp(d2["gen_b"])
    forced = run_pipeline(p, from_stage="gen_b")
    assert {i.name for i in forced.instances if i.status == "run"} == {"gen_b", "report"}
    assert _manifest_stamp(dirs["gen_a"]) == stamps["gen_a"]
    assert _manifest_stamp(d2["gen_b"])[1] != before[1]  # recomputed
    assert json.loads((d2["gen_b"] / "manifest.json").read_text())["counts"]["generated_this_run"] == 4


def test_kill_mid_stage_then_rerun_resumes_and_matches_uninterrupted(tmp_path, tiny_model_dir):
    ref = _pipeline(tmp_path, tiny_model_dir, n_b=16, tokens_b=32, batch=1, out="ref")
    run_pipeline(ref)
    p = _pipeline(tmp_path, tiny_model_dir, n_b=16, tokens_b=32, batch=1, out="work")
    proc = subprocess.Popen([sys.executable, "-m", "micota", "run", str(p)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=os.environ.copy())
    out = tmp_path / "work"
    deadline = time.time() + 120
    killed_in = None
    while time.time() < deadline and proc.poll() is None:
        shards = list(out.glob("gen_b-*/samples-*.jsonl"))
        if shards and shards[0].read_bytes().count(b"\n") >= 2:
            os.kill(proc.pid, signal.SIGKILL)
            killed_in = shards[0].parent
            break
        time.sleep(0.02)
    proc.wait()
    assert killed_in is not None, "the run finished before it could be killed"
    assert not (killed_in / "manifest.json").exists()
    gen_a = next(out.glob("gen_a-*"))
    stamp_a = _manifest_stamp(gen_a)
    partial = killed_in.joinpath(next(iter(p.name for p in killed_in.glob("samples-*.jsonl")))).read_bytes().count(b"\n")

    dry = {i.name: i.status for i in make_plan(load_pipeline(p)).instances}
    assert dry == {"gen_a": "cached", "gen_b": "resume", "report": "run"}
    run_pipeline(p)
    assert _manifest_stamp(gen_a) == stamp_a  # finished stage not recomputed
    man = json.loads((killed_in / "manifest.json").read_text())
    assert man["counts"]["generated_this_run"] == 16 - partial  # resumed, not restarted
    got, want = (json.loads((d / "results.json").read_text()) for d in (out, tmp_path / "ref"))
    src_dirs = [{k: sorted({Path(f).parent.name for f in v["files"]}) for k, v in r.pop("sources").items()} for r in (got, want)]
    assert got == want and src_dirs[0] == src_dirs[1]  # same numbers, from the same keyed stage directories


def test_dry_run_reasons_and_yaml_errors_name_the_key(tmp_path, tiny_model_dir, cli):
    p = _pipeline(tmp_path, tiny_model_dir)
    r = cli("run", str(p), "--dry-run")
    assert r.returncode == 0 and "missing: never run" in r.stdout  # the plan is a dry run's result: stdout
    assert not (tmp_path / "out").exists()
    spec = yaml.safe_load(p.read_text())
    bad_cases = [
        (lambda s: s["stages"]["gen_a"].update(lr=0.1), "stages.gen_a.lr: unknown key"),
        (lambda s: s["stages"]["gen_a"]["inputs"].update(problemz="x"), "stages.gen_a.inputs.problemz: unknown key"),
        (lambda s: s["stages"]["gen_a"].update(max_new_tokens="many"), "stages.gen_a.max_new_tokens"),
        (lambda s: s["stages"]["gen_b"]["inputs"].update(problems="${nope}/x.jsonl"), "stages.gen_b.inputs.problems: unknown reference ${nope}"),
        (lambda s: s["stages"]["gen_a"].update(kind="frobnicate"), "unknown stage kind 'frobnicate'"),
        (lambda s: s.update(modelz={}), "modelz: unknown key"),
        (lambda s: s["stages"]["gen_a"]["inputs"].update(problems="${gen_b}/x"), None),  # fine alone
    ]
    for mutate, msg in bad_cases:
        s = yaml.safe_load(p.read_text())
        mutate(s)
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump(s))
        r = cli("run", str(bad), "--dry-run")
        if msg is None:
            continue
        assert r.returncode == 2, (msg, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], (msg, r.stderr)
    # a cycle is named
    s = dict(spec)
    s["stages"]["gen_a"]["inputs"]["problems"] = "${gen_b}/p.jsonl"
    s["stages"]["gen_b"]["inputs"]["problems"] = "${gen_a}/p.jsonl"
    with pytest.raises(UserError, match="dependency cycle"):
        make_plan(parse_pipeline(s))


def test_foreach_variants_expand_and_match_siblings(tmp_path, tiny_model_dir):
    a = _problems(tmp_path / "a.jsonl", 2)
    spec = parse_pipeline({
        "name": "fe", "out": str(tmp_path / "o"), "variants": {"long": str(a), "short": str(a)},
        "stages": {
            "gen": {"kind": "generate", "foreach": "variants", "inputs": {"model": str(tiny_model_dir), "problems": "${variant}"},
                    "max_new_tokens": 4},
            "gen2": {"kind": "generate", "foreach": "variants", "inputs": {"model": str(tiny_model_dir),
                     "problems": "${data.p}"}, "seed": 1, "after": ["gen"]},
            "report": {"kind": "report", "inputs": {"evals": "${gen.*}"}},
        },
        "data": {"p": str(a)},
    })
    plan = make_plan(spec)
    names = [i.name for i in plan.instances]
    assert set(names) == {"gen.long", "gen.short", "gen2.long", "gen2.short", "report"}
    rep = plan.get("report")
    assert rep.config.evals == {"long": str(plan.get("gen.long").dir), "short": str(plan.get("gen.short").dir)}
    assert names.index("report") > names.index("gen.short")
    assert set(plan.get("gen2.long").deps) == {"gen.long", "gen.short"}


def check_report_traces(out: Path) -> None:
    """Every number in results.json has a source (stage output files that exist); every number in
    REPORT.md's tables is one of results.json's numbers as the report formats them."""
    from micota.report.render import fmt

    res = json.loads((out / "results.json").read_text())
    sources = res["sources"]
    values: set[str] = set()

    def walk(x, path):
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{path}.{k}" if path else k)
        elif isinstance(x, list):
            for v in x:  # the claims list is keyed by claim id
                walk(v, f"{path}.{v['id']}" if isinstance(v, dict) and "id" in v else path)
        elif isinstance(x, (int, float)) and not isinstance(x, bool):
            values.add(fmt(x))
            keys = [k for k in sources if path == k or path.startswith(k + ".")]
            assert keys, f"{path}: no source"
            for f in sources[max(keys, key=len)]["files"]:
                assert (out / f).is_file() and (out / f).parent.joinpath("manifest.json").is_file(), f

    walk({k: v for k, v in res.items() if k != "sources"}, "")
    for table in (out / "REPORT.md").read_text().split("\n\n"):
        rows = [r for r in table.splitlines() if r.startswith("|")][2:]  # skip header and rule
        for row in rows:
            for num in re.findall(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])", re.sub(r"\(\w+\)", "", row)):
                assert num in values, f"REPORT.md number {num} not in results.json ({row})"


def test_report_numbers_trace_to_stage_outputs(tmp_path, tiny_model_dir):
    p = _pipeline(tmp_path, tiny_model_dir)
    plan = run_pipeline(p)
    check_report_traces(plan.out)
    res = json.loads((plan.out / "results.json").read_text())
    assert [c["id"] for c in res["claims"]] == ["i", "ii", "iii"]
    assert all(c["verdict"] in ("reproduced", "not reproduced", "inconclusive") for c in res["claims"])
    # recount one accuracy independently from its source file
    src = res["sources"]["variants.mid.b"]["files"][0]
    rows = [json.loads(x) for x in (plan.out / src).read_text().splitlines()]
    assert res["variants"]["mid"]["b"]["n"] == len({r["problem_id"] for r in rows})


def test_an_empty_variant_is_recorded_and_the_rest_of_the_pipeline_runs(tmp_path, tiny_model_dir):
    """An untrained model solves nothing: its filter stage comes out empty, the student stage that
    depends on it is skipped as empty, and the report still runs, naming the empty variant."""
    spec = yaml.safe_load(_pipeline(tmp_path, tiny_model_dir).read_text())
    spec["stages"]["filter_b"] = {"kind": "filter", "inputs": {"samples": "${gen_b}"}, "max_tokens": 64}
    spec["stages"]["train_b"] = {"kind": "train", "inputs": {"base": "${models.m}", "data": "${filter_b}"},
                                 "max_steps": 1, "max_length": 256}
    spec["stages"]["stats"] = {"kind": "stats", "inputs": {"inputs": ["${gen_a}", "${filter_b}"], "tokenizer": "${models.m}"},
                               "labels": ["a", "b"]}
    spec["stages"]["report"]["inputs"]["bpc"] = {"mid": "${filter_b}"}
    p = tmp_path / "pipe-empty.yaml"
    p.write_text(yaml.safe_dump(spec, sort_keys=False))
    plan = run_pipeline(p)
    dirs = {i.name: i.dir for i in plan.instances}
    fm = json.loads((dirs["filter_b"] / "manifest.json").read_text())
    assert fm["complete"] and fm["empty"] and "no sample survived filtering" in fm["empty_reason"]
    tm = json.loads((dirs["train_b"] / "manifest.json").read_text())
    assert tm["empty"] and "filter_b" in tm["empty_reason"]
    assert not (dirs["train_b"] / "config.json").exists()
    stats = json.loads((dirs["stats"] / "stats.json").read_text())
    assert list(stats["datasets"]) == ["a"] and "no sample survived" in stats["empty"]["b"]
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert "bpc.mid" in res["empty"] and res["claims"][2]["verdict"] == "inconclusive"
    assert "mid is empty" in res["claims"][2]["why"]
    assert "bpc.mid: " in (tmp_path / "out" / "REPORT.md").read_text()
    # a rerun finds everything cached, the empty stages included
    assert [i.status for i in make_plan(load_pipeline(p)).instances] == ["cached"] * len(plan.instances)
