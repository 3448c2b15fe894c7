"""Worker processes: hard timeouts, crashes, threads, the grader registry and grade_samples."""

from __future__ import annotations

import os
import threading
import time

import pytest

from micota.errors import UserError
from micota.grading import GRADERS, grade, grade_batch, grade_samples, register_grader
from micota.records import Sample

# A grade that never finishes (sympy evaluating 9^(9^9) exactly would take minutes; such answers are
# now caught by the parent's pre-screen, so the pool's own timeout is driven by a grader that hangs).
EXPLODES = "Let me compute. HANG"
TIMEOUT = 1.5
SLACK = 4.0  # kill + reap on a loaded 2-core machine


@register_grader("test-hang")
def _hanging_grader(completion: str, reference: str):
    if completion.endswith("HANG"):
        while True:  # burns CPU like sympy does
            pass
    return GRADERS["default"](completion, reference)


@register_grader("test-crash")
def _crashing_grader(completion: str, reference: str):
    if completion == "crash":
        os._exit(3)  # a segfault-like death of the worker
    return GRADERS["default"](completion, reference)


@register_grader("test-upper")
def _upper_grader(completion: str, reference: str):
    from micota.grading import GradeResult

    ok = completion.strip().upper() == reference
    return GradeResult(ok, completion.strip(), "match" if ok else "mismatch")


def _sample(pid: str, completion: str, reference: str | None, source: str, finish: str = "stop") -> Sample:
    return Sample(problem_id=pid, sample_idx=0, model="m", prompt="q", completion=completion, finish_reason=finish,
                  prompt_tokens=1, completion_tokens=1, template_hash="t", config_hash="c", seed=0, source=source,
                  reference=reference)


def test_pathological_input_times_out_in_bounded_time():
    assert grade("\\boxed{1}", "1").correct  # a warm worker, so only the item itself is timed
    t0 = time.monotonic()
    r = grade(EXPLODES, "5", "test-hang", timeout=TIMEOUT)
    elapsed = time.monotonic() - t0
    assert (r.correct, r.reason) == (False, "timeout")
    assert TIMEOUT <= elapsed < TIMEOUT + SLACK
    assert grade("\\boxed{5}", "5").reason == "match"  # the killed worker was replaced


def test_batch_from_a_non_main_thread_with_stuck_items():
    pairs = [(EXPLODES, "5"), ("\\boxed{\\frac{1}{2}}", "0.5"), (EXPLODES, "5"), ("\\boxed{3}", "4")] * 2
    out: list = []
    t = threading.Thread(target=lambda: out.append(grade_batch(pairs, "test-hang", workers=2, timeout=TIMEOUT)))
    t0 = time.monotonic()
    t.start()
    t.join(60)
    assert not t.is_alive(), "grade_batch hung"
    # 4 stuck items over 2 workers: two rounds of timeouts plus worker restarts, never the 370M digits
    assert time.monotonic() - t0 < 2 * TIMEOUT + 4 * SLACK
    assert [r.reason for r in out[0]] == ["timeout", "match", "timeout", "mismatch"] * 2


def test_math_verify_signal_timeouts_are_not_used_off_the_main_thread():
    # math-verify's own timeouts call signal.alarm, which raises in a non-main thread.
    out: list = []
    t = threading.Thread(target=lambda: out.append(grade("\\boxed{x^2+2x+1}", "(x+1)^2")))
    t.start()
    t.join(30)
    assert out and out[0].reason == "match"


def test_a_dying_worker_is_replaced_and_its_item_marked_crashed():
    res = grade_batch([("\\boxed{1}", "1"), ("crash", "1"), ("\\boxed{2}", "2")], "test-crash", workers=1)
    assert [r.reason for r in res] == ["match", "crashed", "match"]


def test_registered_grader_runs_in_the_workers():
    assert "test-upper" in GRADERS
    assert grade("abc", "ABC", mode="test-upper").correct
    assert not grade("abd", "ABC", mode="test-upper").correct


def test_grader_that_workers_cannot_import_is_refused():
    register_grader("test-lambda")(lambda c, r: None)
    try:
        with pytest.raises(UserError, match="test-lambda.*module level"):
            grade("x", "y", mode="test-lambda")
    finally:
        del GRADERS["test-lambda"]


@pytest.mark.parametrize("kw,msg", [(dict(timeout=0), "timeout must be > 0"), (dict(workers=0), "workers must be >= 1")])
def test_bad_batch_arguments(kw, msg):
    with pytest.raises(UserError, match=msg):
        grade_batch([("\\boxed{1}", "1")], **kw)


def test_bad_item_types():
    with pytest.raises(UserError, match="item 1: completion and reference must be strings"):
        grade_batch([("\\boxed{1}", "1"), ("\\boxed{1}", None)])


def test_empty_batch():
    assert grade_batch([]) == []


def test_grade_samples_fills_fields_by_benchmark_mode():
    samples = [
        _sample("g1", "3 + 4 = 7 apples, so 7", "7", "gsm8k"),  # gsm8k mode: last number, no box needed
        _sample("m1", "so \\boxed{2\\sqrt{2}}", "\\sqrt{8}", "math500"),
        _sample("m2", "so \\boxed{2\\sqrt{2}} and then I kept going", "\\sqrt{8}", "math500", finish="length"),
        _sample("a1", "answer \\boxed{25}", "025", "aime24"),
    ]
    out = grade_samples(samples)
    assert [(s.correct, s.grade_reason, s.grade_mode, s.extracted) for s in out] == [
        (True, "match", "gsm8k", "7"),
        (True, "match", "default", "2\\sqrt{2}"),
        (False, "truncated", "default", None),  # cut by the token limit: wrong, whatever it says
        (True, "match", "default", "25"),
    ]
    assert samples[0].correct is None  # inputs are not modified
    hendrycks = grade_samples(samples[1:2], mode="hendrycks")
    assert (hendrycks[0].correct, hendrycks[0].grade_mode) == (False, "hendrycks")


def test_grade_samples_needs_a_reference():
    with pytest.raises(UserError, match=r"\(x1, 0\) has no reference"):
        grade_samples([_sample("x1", "\\boxed{1}", None, "math500")])


def test_worker_killed_while_idle_is_replaced_and_threads_share_the_pool():
    from micota.grading.pool import POOL

    assert grade("\\boxed{1}", "1").correct
    victim = POOL._workers[0].proc
    victim.kill()
    victim.wait(10)
    out: list = []
    threads = [threading.Thread(target=lambda k=k: out.append(grade(f"\\boxed{{{k}}}", str(k)).correct)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out == [True] * 4
