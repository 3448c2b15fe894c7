"""Validity checks gate the claims: hand-built stage outputs of a sound experiment give computed
verdicts; the degenerate ones the miniature world used to produce (100% truncation, a 3-example
dataset, a fine-tune worse than its base, a huge task vector) give "not testable", naming the check.
Check values are compared with hand-computed numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from micota.manifest import write_manifest
from micota.records import BpcRecord, Message, Sample, SftExample, write_jsonl_atomic
from micota.report import ReportConfig, build_report
from micota.report import checks as K
from micota.report.claims import NOT_TESTABLE

VOCAB = 512  # uniform guess: 9 bits per token
PROBLEMS = [f"p{i:03d}" for i in range(40)]


def _samples(d: Path, correct: list[bool], *, source: str, tokens: int = 50, length_cut: float = 0.0) -> str:
    rows = []
    for i, (pid, ok) in enumerate(zip(PROBLEMS, correct)):
        cut = i < round(length_cut * len(correct))
        rows.append(Sample(problem_id=pid, model="m", prompt="q", completion="\\boxed{1}", finish_reason="length" if cut else "stop",
                           prompt_tokens=5, completion_tokens=tokens, template_hash="t", config_hash="c", seed=0, source=source,
                           reference="1", extracted="1", correct=ok and not cut, grade_mode="default"))
    write_jsonl_atomic(d / "samples-00000.jsonl", rows)
    write_manifest(d, stage="generate", config={"n": len(rows)})
    return str(d)


def _dataset(d: Path, n: int, problems: list[str] | None = None) -> str:
    problems = problems or [f"t{i:04d}" for i in range(n)]
    rows = [SftExample(id=f"{p}-x", problem_id=p, prompt=[Message(role="user", content="q")],
                       completion=[Message(role="assistant", content="a")]) for p in problems[:n]]
    write_jsonl_atomic(d / "data.jsonl", rows)
    write_manifest(d, stage="filter", config={})
    return str(d)


def _model(d: Path) -> str:
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"vocab_size": VOCAB}))
    write_manifest(d, stage="train", config={})
    return str(d)


def _bpc(d: Path, model: str, bits_per_token: float) -> str:
    recs = [BpcRecord(id=f"r{i}", chars=40, tokens=10, nll_bits=10 * bits_per_token, bpc=bits_per_token / 4,
                      bpt=bits_per_token) for i in range(20)]
    write_jsonl_atomic(d / "bpc.jsonl", recs)
    write_manifest(d, stage="bpc", config={"model": model})
    return str(d)


def _train(d: Path, losses: list[float]) -> str:
    d.mkdir(parents=True)
    (d / "train_report.json").write_text(json.dumps({"loss_curve": [{"step": i, "loss": v} for i, v in enumerate(losses)]}))
    write_manifest(d, stage="train", config={})
    return str(d)


def _merge_search(d: Path, lin_tokens: float) -> str:
    d.mkdir(parents=True)
    ms = {"base": {"accuracy": 0.5, "mean_tokens": 30.0, "truncated": 0.0, "n": 40},
          "finetuned": {"accuracy": 0.8, "mean_tokens": 200.0, "truncated": 0.0, "n": 40},
          "points": [{"method": "linear", "weight": 0.5, "density": None, "accuracy": 0.7, "mean_tokens": lin_tokens,
                      "truncated": 0.0, "n": 40, "reference": True},
                     {"method": "dare_ties", "weight": 0.5, "density": 0.5, "accuracy": 0.75, "mean_tokens": 100.0,
                      "truncated": 0.0, "n": 40, "reference": False}],
          "chosen": {"method": "dare_ties", "weight": 0.5, "density": 0.5, "within_tolerance": True},
          "selection": {"rule": "target-length", "target": 0.3, "tolerance": 0.1, "length_tolerance": 0.05,
                        "length_ratio": 0.5, "within_tolerance": True, "target_reached": False, "met": False}}
    (d / "merge_search.json").write_text(json.dumps(ms))
    (d / "merge_report.json").write_text(json.dumps({"task_vector": {"base_norm": 10.0, "delta_norm": 0.3, "relative": 0.03}}))
    write_manifest(d, stage="merge_search", config={})
    return str(d)


def _experiment(root: Path, **bad) -> ReportConfig:
    """A sound experiment; keyword arguments break one precondition each."""
    acc = lambda k: [i % 10 < k for i in range(40)]  # noqa: E731  (k/10 of the problems right)
    student = _model(root / "student")
    evals, train = {}, {}
    for v, (test_k, hard_k) in {"long": (6, 3), "mid": (8, 6), "short": (7, 1)}.items():
        cut = bad.get("truncated", 0.0) if v == "mid" else 0.0
        evals[v] = [_samples(root / f"{v}-test-{s}", acc(test_k), source="world-test", length_cut=cut) for s in (0, 1)] + \
                   [_samples(root / f"{v}-hard-{s}", acc(hard_k), source="world-hard", length_cut=cut) for s in (0, 1)]
        train[v] = [_train(root / f"{v}-train-{s}", [3.0, 2.0, 1.2, 1.0, 0.95, 0.93, 0.92, 0.92]) for s in (0, 1)]
    shared = [f"t{i:04d}" for i in range(300)]
    data = {"long": _dataset(root / "d-long", 300, shared), "short": _dataset(root / "d-short", 300, shared),
            "mid": _dataset(root / "d-mid", bad.get("mid_examples", 300), shared)}
    bpc = {"long": _bpc(root / "bpc-long", student, 2.0), "mid": _bpc(root / "bpc-mid", student, 1.5),
           "short": _bpc(root / "bpc-short", student, bad.get("short_bits", 1.0))}
    ta_hard_k = bad.get("ta_hard_k", 4)
    return ReportConfig(
        out=root / "report", evals=evals, train=train, data=data, bpc=bpc,
        student_base=[_samples(root / "sb-test", acc(5), source="world-test"), _samples(root / "sb-hard", acc(0), source="world-hard")],
        ta_finetuned=_samples(root / "ta-test", acc(8), source="world-test", tokens=200),
        ta_merged=_samples(root / "merged-test", acc(8), source="world-test", tokens=100),
        ta_base_hard=_samples(root / "ta-base-hard", acc(2), source="world-hard"),
        ta_finetuned_hard=_samples(root / "ta-ft-hard", acc(ta_hard_k), source="world-hard"),
        merge_search=_merge_search(root / "merge", bad.get("lin_tokens", 110.0)),
        baseline="long", method="mid", reference="short", n_boot=300)


def _run(tmp_path: Path, **bad) -> dict:
    out = build_report(_experiment(tmp_path, **bad))
    return json.loads((out / "results.json").read_text())


def _claim(res: dict, cid: str) -> dict:
    return next(c for c in res["claims"] if c["id"] == cid)


def _check(res: dict, name: str) -> dict:
    return next(c for c in res["checks"] if c["name"] == name)


def test_sound_experiment_passes_every_check_and_gets_computed_verdicts(tmp_path):
    res = _run(tmp_path)
    failed = [c["name"] for c in res["checks"] if not c["passed"]]
    assert failed == [], failed
    # hand-computed values
    assert _check(res, "task_vector")["value"] == pytest.approx(0.03)
    assert _check(res, "interpolation")["value"] == pytest.approx((110 - 30) / (200 - 30))
    assert _check(res, "long_cot_helps")["value"] == pytest.approx(0.4 - 0.2)
    assert _check(res, "step_by_step_helps")["value"] == pytest.approx(0.6 - 0.1)
    assert _check(res, "base_knows:student/long")["value"] == pytest.approx(2.0)
    assert _check(res, "bpc_uniform:mid")["threshold"] == "< 2.250"  # 9 bits/token * 10 tokens / 40 chars
    # q3 = (0.95, 0.93), q4 = (0.92, 0.92): drop 0.02, SE sqrt(0.0002 / 2 + 0) = 0.01, lower bound 0.02 - 1.645 * 0.01
    assert _check(res, "converged:mid")["value"] == pytest.approx((0.02 - 1.645 * 0.01) / (3.0 - 0.92))
    assert res["variant_info"]["mid"]["late_loss_drop"] == pytest.approx([0.02 / (3.0 - 0.92)] * 2)
    assert res["variant_info"]["mid"]["late_loss_drop_vs_final"] == pytest.approx([(0.95 + 0.93 - 0.92 - 0.92) / 2 / 0.92] * 2)
    for c in res["claims"]:
        assert c["verdict"] != NOT_TESTABLE and c["failed_checks"] == []
    # claim (ii): mid beats long on both splits, over both seeds
    assert _claim(res, "ii")["verdict"] == "reproduced"
    assert res["variant_info"]["mid"]["seeds"] == 2 and res["variants"]["mid"]["world-test"]["samples"] == 80
    md = (tmp_path / "report" / "REPORT.md").read_text()
    # the merge search's outcome: within tolerance, but the length target (0.3 ± 0.05) was not reached at 0.5
    assert res["merge_selection"]["target_reached"] is False and res["merge_selection"]["within_tolerance"] is True
    assert ("achieved length ratio 0.500; length target (length ratio 0.300 ± 0.050) reached: **no**; "
            "within the accuracy tolerance (0.100): yes") in md
    assert md.index("## Validity checks") < md.index("## The paper's claims") < md.index("## Students per training-data variant")
    assert "untouched student base" in md


def test_all_truncated_students_make_claim_ii_not_testable(tmp_path):
    res = _run(tmp_path, truncated=1.0)
    assert _check(res, "truncation:student:mid")["value"] == 1.0 and not _check(res, "truncation:student:mid")["passed"]
    ii = _claim(res, "ii")
    assert ii["verdict"] == NOT_TESTABLE and "truncation:student:mid" in ii["failed_checks"]
    assert "reproduced" not in ii["why"]
    assert _claim(res, "iii")["verdict"] != NOT_TESTABLE  # BPC does not depend on the students' generations


def test_a_three_example_dataset_makes_claims_ii_and_iii_not_testable(tmp_path):
    res = _run(tmp_path, mid_examples=3)
    assert _check(res, "data_size:mid")["value"] == 3
    assert not _check(res, "same_problems")["passed"]  # 3 of the 300 problems
    for cid in ("ii", "iii"):
        c = _claim(res, cid)
        assert c["verdict"] == NOT_TESTABLE and "data_size:mid" in c["failed_checks"]
    assert _claim(res, "i")["verdict"] != NOT_TESTABLE


def test_a_fine_tune_below_its_base_makes_claims_i_and_ii_not_testable(tmp_path):
    res = _run(tmp_path, ta_hard_k=1)
    assert _check(res, "long_cot_helps")["value"] == pytest.approx(0.1 - 0.2)
    for cid in ("i", "ii"):
        assert _claim(res, cid)["verdict"] == NOT_TESTABLE
    assert "long_cot_helps" in _claim(res, "i")["why"]


def test_linear_merge_at_an_end_point_and_an_unseen_style_fail(tmp_path):
    res = _run(tmp_path, lin_tokens=195.0, short_bits=9.5)
    assert not _check(res, "interpolation")["passed"]  # (195-30)/170 = 0.97 > 0.9
    assert not _check(res, "base_knows:student/short")["passed"]  # 9.5 bits/token > log2 512 = 9
    assert all(c["verdict"] == NOT_TESTABLE for c in res["claims"])


def test_check_helpers_against_hand_computation(tmp_path):
    import torch
    from safetensors.torch import save_file

    assert K.late_loss_drop([{"loss": v} for v in (4, 3, 2, 1)]) == pytest.approx((2 - 1) / (4 - 1))
    assert K.late_loss_drop([{"loss": v} for v in (4, 3, 2, 1)], vs_final=True) == pytest.approx((2 - 1) / 1)
    # a student that fits its data: 0.006 -> 0.004 is half the final loss but nothing of the run's reduction
    fit = [{"loss": v} for v in (0.5, 0.1, 0.02, 0.01, 0.007, 0.006, 0.004, 0.004)]
    assert K.late_loss_drop(fit) == pytest.approx((0.0065 - 0.004) / (0.5 - 0.004))
    assert K.late_loss_drop(fit, vs_final=True) == pytest.approx((0.0065 - 0.004) / 0.004)
    assert K.late_loss_drop([{"loss": 1.0}] * 4) is None  # no reduction at all: not computable, fails
    assert K.late_loss_drop([{"loss": 1.0}] * 3) is None
    # noise: q3 = (0.3, 0.1), q4 = (0.1, 0.1); m3 - m4 = 0.1, SE = sqrt(0.02 / 2 + 0) = 0.1
    noisy = [{"loss": v} for v in (2.0, 1.0, 0.5, 0.3, 0.3, 0.1, 0.1, 0.1)]
    assert K.late_loss_drop(noisy) == pytest.approx(0.1 / 1.9)
    assert K.late_loss_drop(noisy, z=1.645) == pytest.approx((0.1 - 0.1645) / 1.9)  # within the noise: a plateau
    # a curve still falling in a straight line is not converged even at its lower bound:
    # q3 = (4, 3), q4 = (2, 1), SE = sqrt(0.5 / 2 + 0.5 / 2); (2 - 1.645 * 0.7071) / (8 - 1.5) = 0.129 > 0.1
    line = [{"loss": float(v)} for v in range(8, 0, -1)]
    assert K.late_loss_drop(line, z=1.645) == pytest.approx((2 - 1.645 * 0.5 ** 0.5) / 6.5) and K.late_loss_drop(line, z=1.645) > 0.1
    assert K.late_loss_drop([{"loss": v} for v in (4, 3, 2, 1)], z=1.645) is None  # one point per quarter: no variance
    assert K.interpolation_position(10, 110, 60) == pytest.approx(0.5)
    base = {"a": torch.tensor([3.0, 4.0]), "b": torch.tensor([[0.0, 0.0]]), "i": torch.tensor([1, 2])}
    ft = {"a": torch.tensor([3.0, 5.0]), "b": torch.tensor([[0.0, 1.0]]), "i": torch.tensor([7, 9])}
    for name, t in (("base", base), ("ft", ft)):
        (tmp_path / name).mkdir()
        save_file(t, str(tmp_path / name / "model.safetensors"))
    # integer tensors are ignored: sqrt(1 + 1) / sqrt(9 + 16)
    assert K.task_vector_ratio(tmp_path / "base", tmp_path / "ft") == pytest.approx(math.sqrt(2) / 5)
