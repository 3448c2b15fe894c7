"""micota generate: resumable sharded samples, resume after a real SIGKILL, config mismatch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from micota.errors import UserError
from micota.generation.runner import GenerateConfig, generate, load_samples
from micota.manifest import read_manifest
from micota.records import Problem, write_jsonl_atomic


def _problems(path, k):
    write_jsonl_atomic(path, [Problem(id=f"q{i}", problem=f"What is {i} + {i * 3}?" + " and" * (i % 5), answer=str(4 * i))
                              for i in range(k)])
    return path


def _shard_lines(out):
    lines = []
    for f in sorted(out.glob("samples-*.jsonl")):
        data = f.read_bytes()
        assert data == b"" or data.endswith(b"\n"), f"{f.name} has a torn last line"
        lines += [json.loads(x) for x in data.decode().splitlines()]
    return lines


def test_resume_extends_skips_done_keys_and_drops_torn_tail(tmp_path, tiny_model_dir):
    probs = _problems(tmp_path / "p.jsonl", 7)
    out = tmp_path / "gen"
    cfg = GenerateConfig(model=str(tiny_model_dir), problems=str(probs), out=out, n=2, temperature=0.8,
                         max_new_tokens=6, batch_size=3, limit=4)
    generate(cfg)
    first = {(s.problem_id, s.sample_idx): s for s in load_samples(out)}
    assert sorted(first) == [(f"q{i}", j) for i in range(4) for j in range(2)]
    s = first[("q1", 0)]
    assert (s.reference, s.source, s.model, s.prompt_tokens > 5) == ("4", "p", str(tiny_model_dir), True)
    assert read_manifest(out)["counts"]["samples"] == 8
    with open(out / "samples-00000.jsonl", "a") as f:  # what a killed writer leaves behind
        f.write('{"problem_id": "q4", "sample_idx": 0, "compl')
    generate(cfg.model_copy(update={"limit": None}))
    rows = _shard_lines(out)
    keys = [(r["problem_id"], r["sample_idx"]) for r in rows]
    assert sorted(keys) == [(f"q{i}", j) for i in range(7) for j in range(2)]  # each key exactly once
    kept = {(r["problem_id"], r["sample_idx"]): r["completion"] for r in rows}
    assert all(kept[k] == s.completion for k, s in first.items())  # finished rows are kept as they were
    man = read_manifest(out)
    assert man["counts"]["generated_this_run"] == 6 and man["counts"]["samples"] == 14
    assert len(list(out.glob("samples-*.jsonl"))) == 2
    with pytest.raises(UserError, match="different model/sampling/prompt config"):
        generate(cfg.model_copy(update={"temperature": 0.5}))


def test_sigkill_mid_run_then_rerun_gives_every_key_once(tmp_path, tiny_model_dir):
    probs = _problems(tmp_path / "p.jsonl", 64)
    out = tmp_path / "gen"
    args = [sys.executable, "-m", "micota", "generate", str(tiny_model_dir), "--problems", str(probs), "--out", str(out),
            "--max-new-tokens", "40", "--batch-size", "8"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shard = out / "samples-00000.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if shard.exists() and shard.stat().st_size > 0:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "generation finished before it could be killed: make the job bigger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()  # a killed run never looks complete
    n_killed = len([x for x in shard.read_bytes().split(b"\n")[:-1] if x])
    assert 8 <= n_killed < 64
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = _shard_lines(out)
    keys = [(r["problem_id"], r["sample_idx"]) for r in rows]
    assert len(keys) == len(set(keys)) == 64
    assert set(keys) == {(f"q{i}", 0) for i in range(64)}
    assert read_manifest(out)["counts"]["generated_this_run"] == 64 - n_killed
    assert done.stdout.strip() == str(out)


def test_no_chat_template_flag_renders_plain_prompts(tmp_path, tiny_model_dir):
    from typer.testing import CliRunner

    from micota.cli import app

    probs = _problems(tmp_path / "p.jsonl", 2)
    out = tmp_path / "plain"
    r = CliRunner().invoke(app, ["generate", str(tiny_model_dir), "--problems", str(probs), "--out", str(out),
                                 "--no-chat-template", "--max-new-tokens", "2", "--instruction", "Answer:"])
    assert r.exit_code == 0, r.output
    s = sorted(load_samples(out), key=lambda s: s.problem_id)
    assert s[0].prompt == "What is 0 + 0?\nAnswer:\n"
    assert read_manifest(out)["config"]["use_chat_template"] is False


def test_sampled_run_killed_and_resumed_equals_an_uninterrupted_one(tmp_path, tiny_model_dir):
    """Per-sample seeds: sample k of problem p is the same whatever the batch size, the order and
    the resume point, so a SIGKILLed and resumed sampled run equals one that never stopped."""
    probs = _problems(tmp_path / "p.jsonl", 24)
    common = ["--problems", str(probs), "--max-new-tokens", "30", "--n", "3", "--temperature", "1.0", "--top-p", "0.9",
              "--seed", "5"]
    whole = tmp_path / "whole"
    generate(GenerateConfig(model=str(tiny_model_dir), problems=str(probs), out=whole, max_new_tokens=30, n=3,
                            temperature=1.0, top_p=0.9, seed=5, batch_size=7))
    out = tmp_path / "resumed"
    args = [sys.executable, "-m", "micota", "generate", str(tiny_model_dir), *common, "--out", str(out)]
    proc = subprocess.Popen([*args, "--batch-size", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shard = out / "samples-00000.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (shard.exists() and shard.stat().st_size > 0):
        time.sleep(0.02)
    assert proc.poll() is None, "generation finished before it could be killed: make the job bigger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_killed = len(_shard_lines(out))
    assert 0 < n_killed < 72
    done = subprocess.run([*args, "--batch-size", "5"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    got = {(r["problem_id"], r["sample_idx"]): r["completion"] for r in _shard_lines(out)}
    want = {(s.problem_id, s.sample_idx): s.completion for s in load_samples(whole)}
    assert len(got) == 72 and got == want
    assert len({want[(f"q{i}", k)] for i in range(24) for k in range(3)}) > 24  # samples of one problem differ
