"""`micota eval` of the real SmolLM2-135M-Instruct on 20 GSM8K problems (CPU), recounted from the
stored records with micota.grading, then re-graded and resumed through the CLI."""

from __future__ import annotations

import json
import statistics

import pytest

from micota.grading import is_correct
from micota.records import Sample, read_jsonl

pytestmark = pytest.mark.slow
ARGS = ["--benchmarks", "gsm8k", "--limit", "20", "--max-new-tokens", "96", "--batch-size", "20"]


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory, smollm2_dir, data_dir):
    from conftest import run_cli

    out = tmp_path_factory.mktemp("eval") / "smollm2-gsm8k"
    r = run_cli("eval", "smollm2-135m", *ARGS, "--data-dir", str(data_dir), "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| gsm8k | gsm8k | 20 | 1 |" in r.stdout and "macro average" in r.stdout
    return out


def test_accuracy_recounted_from_stored_records(eval_dir):
    raw = [s for f in sorted((eval_dir / "gsm8k").glob("samples-*.jsonl")) for s in read_jsonl(f, Sample)]
    assert len(raw) == 20 and len({s.problem_id for s in raw}) == 20
    assert all(s.source == "gsm8k" and s.reference and s.completion_tokens <= 96 for s in raw)
    # independent recount: grade each raw completion, a truncated one is wrong
    right = [s.finish_reason == "stop" and is_correct(s.completion, s.reference, "gsm8k") for s in raw]
    summary = json.loads((eval_dir / "summary.json").read_text())
    (b,) = summary["benchmarks"]
    assert b["accuracy"] == pytest.approx(sum(right) / 20)
    assert summary["macro_accuracy"] == pytest.approx(sum(right) / 20)
    assert b["truncation_rate"] == pytest.approx(sum(s.finish_reason == "length" for s in raw) / 20)
    assert b["mean_completion_tokens"] == pytest.approx(statistics.fmean(s.completion_tokens for s in raw))
    graded = {(g.problem_id, g.sample_idx): g for g in read_jsonl(eval_dir / "graded.jsonl", Sample)}
    assert [graded[s.key].correct for s in raw] == right
    # a completion cut by the token limit is stored as wrong with reason "truncated", even if its last number matches
    assert all(graded[s.key].grade_reason == "truncated" for s in raw if s.finish_reason == "length")


def test_resume_and_regrade_through_cli(eval_dir, cli, data_dir):
    before = (eval_dir / "gsm8k" / "samples-00000.jsonl").read_bytes()
    r = cli("eval", "smollm2-135m", *ARGS, "--data-dir", str(data_dir), "--out", str(eval_dir))
    assert r.returncode == 0, r.stderr[-2000:]
    # the rerun rule: a complete output with the same config is skipped (nothing generated, nothing rewritten)
    assert "already complete with the same config" in r.stderr and "skipped" in r.stderr, r.stderr[-2000:]
    assert (eval_dir / "gsm8k" / "samples-00000.jsonl").read_bytes() == before
    assert not (eval_dir / "gsm8k" / "samples-00001.jsonl").exists()
    r = cli("grade", str(eval_dir), "--mode", "default")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| gsm8k | default | 20 |" in r.stdout
    # the regrade lands in grades/default/; the eval's own summary keeps its gsm8k grading
    assert json.loads((eval_dir / "grades" / "default" / "summary.json").read_text())["benchmarks"][0]["grade_mode"] == "default"
    assert json.loads((eval_dir / "summary.json").read_text())["benchmarks"][0]["grade_mode"] == "gsm8k"
    assert "| gsm8k | 20×1 |" in (eval_dir / "grades" / "COMPARISON.md").read_text()
