"""Executors of ``micota run``: ``local`` runs each model stage in its own child process (with a log),
``inprocess`` runs everything in the runner; a stage that fails in its child is one error line naming
the stage and its log; the executor does not change the numbers."""

from __future__ import annotations

import json
import shutil

from test_pipeline_runner import _pipeline


def test_local_runs_model_stages_in_children_with_logs_and_matches_inprocess(tmp_path, tiny_model_dir, cli):
    a = _pipeline(tmp_path, tiny_model_dir, out="local")
    b = _pipeline(tmp_path, tiny_model_dir, out="inproc")
    ra = cli("run", str(a))  # --executor local is the default
    rb = cli("run", str(b), "--executor", "inprocess")
    assert ra.returncode == 0 and rb.returncode == 0, ra.stderr[-2000:] + rb.stderr[-2000:]
    logs = tmp_path / "local" / ".pipeline" / "logs"
    assert sorted(p.name for p in logs.iterdir()) == ["gen_a.log", "gen_b.log"]  # the report ran in-process
    first = (logs / "gen_a.log").read_text().splitlines()[0]
    assert first.startswith("$ ") and " -m micota.pipeline.exec generate " in first and "/.pipeline/configs/gen_a.json" in first
    assert "generate gen_a-" in (logs / "gen_a.log").read_text()  # the child's own progress output
    assert not (tmp_path / "inproc" / ".pipeline" / "logs").exists()
    got, want = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("local", "inproc"))
    got.pop("sources"), want.pop("sources")
    assert got == want


def test_a_stage_failing_in_its_child_is_one_line_naming_the_stage_and_its_log(tmp_path, tiny_model_dir, cli):
    p = _pipeline(tmp_path, tiny_model_dir)
    (tmp_path / "a.jsonl").write_text('{"id": "q0", "answer": "1"}\n')  # no "problem": bad input, found when run
    r = cli("run", str(p))
    log = tmp_path / "out" / ".pipeline" / "logs" / "gen_a.log"
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and last.startswith("error: stage gen_a (generate) failed with exit code 2: "), r.stderr[-2000:]
    assert last.endswith(f"; log: {log}") and "Traceback" not in r.stderr
    assert last.split(": ", 2)[2].split("; log:")[0] in log.read_text()  # the child's own message, kept in its log

    # a crash (not bad input) in the child: still one line, the traceback stays in the log
    (tmp_path / "a.jsonl").write_text('{"id": "q0", "problem": "1+1?", "answer": "2"}\n')
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"\0" * 64)
    p2 = _pipeline(tmp_path, broken, out="out2")
    r2 = cli("run", str(p2))
    last2 = r2.stderr.strip().splitlines()[-1]
    log2 = tmp_path / "out2" / ".pipeline" / "logs" / "gen_a.log"
    assert r2.returncode == 2 and last2.startswith("error: stage gen_a (generate) failed with exit code ") and last2.endswith(f"; log: {log2}"), r2.stderr[-2000:]
    assert not any(line.startswith("Traceback") for line in r2.stderr.splitlines()[-3:])
