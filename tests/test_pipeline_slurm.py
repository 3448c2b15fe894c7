"""``micota run --executor slurm`` on a real single-node Slurm (munged + slurmctld + slurmd started here).

- a tiny pipeline: independent stages queue together (the dependant waits on ``Dependency``);
  ``scancel`` of a running generate job stops its dependant and ends the run with one line naming the
  job and its log; ``--status`` says the same; the rerun resubmits only what is missing, resumes the
  cancelled stage, and its samples have every (problem_id, sample_idx) once; results equal a local run's.
- the quick miniature recipe under Slurm gives the same results.json numbers as the local executor.

If Slurm cannot be installed or started, the tests fail with one line (never skip).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from slurm_cluster import LocalSlurm, SlurmUnavailable
from test_pipeline_runner import _pipeline


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm")
    cluster = LocalSlurm(root)
    try:
        cluster.start()
    except SlurmUnavailable as e:
        cluster.stop()
        pytest.fail(f"Slurm unavailable: {e}", pytrace=False)
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    yield cluster
    subprocess.run(["scancel", "--user=root"], env=cluster.env, capture_output=True)
    cluster.stop()
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old


def _with_slurm_block(path: Path, **slurm) -> Path:
    spec = yaml.safe_load(path.read_text())
    spec["slurm"] = slurm
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _records(out: Path) -> list[dict]:
    p = out / ".pipeline" / "slurm" / "jobs.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.is_file() else []


def _squeue(env) -> list[tuple[str, str, str]]:
    r = subprocess.run(["squeue", "-h", "-o", "%j|%T|%r"], env=env, capture_output=True, text=True)
    return [tuple(line.split("|")) for line in r.stdout.splitlines() if line.strip()]


def _keys(d: Path) -> list[tuple[str, int]]:
    rows = [json.loads(line) for f in sorted(d.glob("samples-*.jsonl")) for line in f.read_text().splitlines() if line.strip()]
    return [(r["problem_id"], r["sample_idx"]) for r in rows]


def test_scancel_then_rerun_resumes_without_loss_or_duplicates(slurm, tmp_path, tiny_model_dir, cli):
    ref = _pipeline(tmp_path, tiny_model_dir, n_b=16, tokens_b=32, batch=1, out="ref")
    assert cli("run", str(ref), "--executor", "local").returncode == 0
    p = _with_slurm_block(_pipeline(tmp_path, tiny_model_dir, n_b=16, tokens_b=32, batch=1, out="work"), poll_s=0.5)
    out = tmp_path / "work"
    proc = subprocess.Popen([sys.executable, "-m", "micota", "run", str(p), "--executor", "slurm"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=slurm.env)
    together: list[tuple[str, str, str]] = []
    cancelled = None
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        q = [j for j in _squeue(slurm.env) if j[0].startswith("tiny:")]
        if len(q) > len(together):
            together = q
        shards = list(out.glob("gen_b-*/samples-*.jsonl"))
        if cancelled is None and shards and shards[0].read_bytes().count(b"\n") >= 2:
            job = next(r["job_id"] for r in _records(out) if r["instance"] == "gen_b")
            subprocess.run(["scancel", job], env=slurm.env, check=True)
            cancelled = (job, shards[0].parent)
        time.sleep(0.2)
    stdout, stderr = proc.communicate(timeout=120)
    assert cancelled is not None, "gen_b finished before it could be cancelled:\n" + stderr[-2000:]
    job, gen_b = cancelled
    # the independent generate stages were in the queue at the same time, the report waiting on them
    names = {n: (state, reason) for n, state, reason in together}
    assert {"tiny:gen_a", "tiny:gen_b", "tiny:report"} <= set(names), together
    assert names["tiny:report"] == ("PENDING", "Dependency"), together
    # the cancelled job ends the run with one line naming the stage, the job and its log; the report was stopped
    last = stderr.strip().splitlines()[-1]
    log = out / ".pipeline" / "logs" / f"gen_b-{job}.log"
    assert proc.returncode == 2 and last == f"error: stage gen_b (generate) job {job} CANCELLED; log: {log}", stderr[-2000:]
    assert log.is_file() and "micota: job" in log.read_text()
    assert "report: cancelled (input stage gen_b failed)" in stderr
    assert not (gen_b / "manifest.json").exists()
    partial = len(_keys(gen_b))
    assert 2 <= partial < 16
    st = cli("run", str(p), "--status")
    assert st.returncode == 0 and f"failed: gen_b (job {job}, CANCELLED); log: {log}" in st.stdout, st.stdout + st.stderr
    gen_a_jobs = [r["job_id"] for r in _records(out) if r["instance"] == "gen_a"]

    again = cli("run", str(p), "--executor", "slurm", timeout=600, env={"SLURM_CONF": str(slurm.conf)})
    assert again.returncode == 0, again.stderr[-3000:]
    recs = _records(out)
    assert [r["job_id"] for r in recs if r["instance"] == "gen_a"] == gen_a_jobs  # cached: never resubmitted
    assert sum(r["instance"] == "gen_b" for r in recs) == 2 and sum(r["instance"] == "report" for r in recs) == 2
    keys = _keys(gen_b)
    assert sorted(keys) == sorted({(f"q{i}", 0) for i in range(100, 116)})  # every key once: nothing lost or duplicated
    man = json.loads((gen_b / "manifest.json").read_text())
    assert man["counts"]["generated_this_run"] == 16 - partial  # resumed, not restarted
    got, want = (json.loads((d / "results.json").read_text()) for d in (out, tmp_path / "ref"))
    got.pop("sources"), want.pop("sources")
    assert got == want
    st = cli("run", str(p), "--status")
    assert st.returncode == 0 and "failed:" not in st.stdout and st.stdout.count("COMPLETED") == 3, st.stdout
