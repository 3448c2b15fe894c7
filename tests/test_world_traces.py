"""The oracle's trace styles: every trace grades correct; long traces slip, notice and recover;
long:short token ratio within 4-8x under the world tokenizer."""

from __future__ import annotations

import re
import statistics

import pytest

from micota.data.world import WorldConfig
from micota.data.world.problems import generate_splits
from micota.data.world.traces import STYLE_CARE, STYLES, care_trace, long_trace, write_trace
from micota.errors import UserError
from micota.grading import grade_batch, is_correct

SPLITS = generate_splits({"train": 150, "test": 50, "hard": 50}, WorldConfig(out=".").knobs(), seed=3)
PROBLEMS = [p for ps in SPLITS.values() for p in ps]


def test_every_trace_of_every_style_grades_correct():
    items, wrong_ref = [], []
    for p in PROBLEMS:
        for style in STYLES:
            t = write_trace(style, p.meta, seed=1, slip_rate=0.3, problem_id=p.id)
            assert t.count("\\boxed{") == 1 and t.rstrip().endswith(f"\\boxed{{{p.answer}}}.")
            items.append((t, p.answer))
            wrong_ref.append((t, str(int(p.answer) + 1)))
    results = grade_batch(items + wrong_ref, mode="default")
    ok = [r.correct for r in results]
    assert all(ok[: len(items)]), [items[i][0][-80:] for i, v in enumerate(ok[: len(items)]) if not v][:3]
    assert not any(ok[len(items):])  # the grader is really comparing


def test_short_is_one_line_per_operation():
    for p in PROBLEMS[:50]:
        lines = write_trace("short", p.meta).splitlines()
        assert len(lines) == len(p.meta["ops"]) + 1
        for n, (line, (op, b)) in enumerate(zip(lines, p.meta["ops"]), start=1):
            assert re.fullmatch(rf"Step {n}: \d+ [-+*/] \d+ = \d+\.", line) and line.split()[4] == str(b)


def test_the_styles_are_points_on_the_care_dial():
    """short / mid / long are care 0 / 0.5 / 1; between them each step decides on its own, at the
    documented rates p_work = min(1, 2c), p_check = max(0, 2c - 1)."""
    assert STYLE_CARE == {"short": 0.0, "mid": 0.5, "long": 1.0}
    for p in PROBLEMS[:20]:
        n_ops = len(p.meta["ops"])
        mid = write_trace("mid", p.meta).splitlines()
        heads = [ln for ln in mid if ln.startswith("Step ")]
        assert len(heads) == n_ops and all("=" not in h for h in heads)  # every step worked out
        assert not any(ln.startswith(("Wait", "Hmm", "Let me")) for ln in mid)  # no check, slip or recap
        long = write_trace("long", p.meta, seed=4, slip_rate=0.0, problem_id=p.id).splitlines()
        assert sum(ln.startswith("Wait, let me check") and ln.endswith("Yes.") for ln in long) == n_ops
        assert sum(ln.startswith("Let me double-check") for ln in long) == (n_ops > 1)
    multi = [p for p in PROBLEMS if len(p.meta["ops"]) > 1]
    for care, p_work, p_check in ((0.25, 0.5, 0.0), (0.75, 1.0, 0.5)):
        steps = work = checks = 0
        texts = [care_trace(p.meta, care, seed=s, slip_rate=0.0, problem_id=p.id) for s in range(4) for p in multi]
        for t in texts:
            lines = t.splitlines()
            heads = [ln for ln in lines if ln.startswith("Step ")]
            steps += len(heads)
            work += sum("=" not in h for h in heads)  # a worked step's head is "Step n: a op b." (no result yet)
            checks += sum(ln.startswith("Wait, let me check") for ln in lines)
            assert is_correct(t, t.rsplit("boxed{", 1)[1].split("}")[0])
        # binomial counts: 4 standard deviations of slack around the documented rates
        for got, p_ in ((work / steps, p_work), (checks / steps, p_check)):
            assert abs(got - p_) <= 4 * (p_ * (1 - p_) / steps) ** 0.5 + 1e-9, (care, got, p_)
        # a trace mixes terse and worked steps (decisions are per step, not one per trace)
        if care == 0.25:
            heads = [[x for x in t.splitlines() if x.startswith("Step ")] for t in texts]
            mixed = sum(0 < sum("=" not in h for h in hs) < len(hs) for hs in heads)
            assert mixed > len(texts) // 4


def test_reflection_is_its_own_dial_off_the_diagonal():
    """care_trace(c, reflect=r): work at min(1, 2c), checks (after one-line or worked steps) and the recap at
    max(0, 2r - 1); reflect=None is r = c; slips stay corrected, the box stays right."""
    multi = [p for p in PROBLEMS if len(p.meta["ops"]) > 1]
    for p in multi[:10]:
        assert care_trace(p.meta, 0.75, reflect=None, seed=2, problem_id=p.id) == care_trace(p.meta, 0.75, reflect=0.75, seed=2, problem_id=p.id)
        terse = care_trace(p.meta, 0.0, reflect=1.0, seed=2, slip_rate=0.0, problem_id=p.id).splitlines()
        n = len(p.meta["ops"])
        # every step one line, each followed by its check, then the recap and the box
        assert [ln for ln in terse if ln.startswith("Step ")] == [ln for ln in terse if re.fullmatch(r"Step \d+: \d+ [-+*/] \d+ = \d+\.", ln)]
        assert len([ln for ln in terse if ln.startswith("Step ")]) == n
        for i, ln in enumerate(terse[:-2]):
            if ln.startswith("Step "):
                a, op, b, _, r = ln.split(": ", 1)[1].rstrip(".").split()
                inv = {"+": "-", "-": "+", "*": "/", "/": "*"}[op]
                assert terse[i + 1] == f"Wait, let me check: {r} {inv} {b} = {a}. Yes."
        assert terse[-2].startswith("Let me double-check: ") and is_correct(terse[-1], p.answer)
        # worked but unreflective: no check, no recap
        plain = care_trace(p.meta, 1.0, reflect=0.0, seed=2, slip_rate=0.5, problem_id=p.id)
        assert plain == write_trace("mid", p.meta)
    # slips on one-line steps are exposed by the check and redone; the box is right
    slipped = [care_trace(p.meta, 0.0, reflect=1.0, seed=s, slip_rate=0.5, problem_id=p.id, return_slips=True) for s in range(3) for p in multi[:10]]
    assert sum(k for _, k in slipped) > 0
    assert any("Something is off." in t for t, _ in slipped)
    for (t, _), p in zip(slipped, [p for s in range(3) for p in multi[:10]]):
        assert is_correct(t, p.answer)
    # rates at (c, r) = (0.25, 0.75): one-line steps half the time, checks on half of all steps
    steps = work = checks = 0
    for s in range(4):
        for p in multi:
            lines = care_trace(p.meta, 0.25, reflect=0.75, seed=s, slip_rate=0.0, problem_id=p.id).splitlines()
            heads = [ln for ln in lines if ln.startswith("Step ")]
            steps += len(heads)
            work += sum("=" not in h for h in heads)
            checks += sum(ln.startswith("Wait, let me check") for ln in lines)
    for got in (work / steps, checks / steps):
        assert abs(got - 0.5) <= 4 * (0.25 / steps) ** 0.5, got


def test_long_trace_slips_are_noticed_and_corrected():
    p = SPLITS["hard"][0]
    text, slips = long_trace(p.meta, seed=0, slip_rate=0.5, problem_id=p.id, return_slips=True)
    assert slips >= 2
    assert "Hmm, wait." in text or "Something is off." in text
    assert "Wait, let me check" in text
    # a wrong intermediate value is written before the correction, yet the final box is right
    assert re.search(r"is \d+, not \d+\.|, not \d+\.", text)
    assert is_correct(text, p.answer)
    clean, none = long_trace(p.meta, seed=0, slip_rate=0.0, problem_id=p.id, return_slips=True)
    assert none == 0 and "wait." not in clean.lower().replace("wait, let me check", "")
    assert len(text) > len(clean)


def test_long_traces_are_seeded():
    p = SPLITS["train"][5]
    a = [long_trace(p.meta, seed=s, slip_rate=0.3, problem_id=p.id) for s in range(8)]
    assert a[0] == long_trace(p.meta, seed=0, slip_rate=0.3, problem_id=p.id)
    assert len(set(a)) > 1  # different seeds slip in different places


def test_long_short_token_ratio_within_4_to_8(tmp_path):
    from micota.generation.prompts import build_messages
    from micota.models.tiny import train_chatml_tokenizer

    texts = [p.problem for p in PROBLEMS] + [write_trace(s, p.meta, problem_id=p.id) for p in PROBLEMS for s in STYLES]
    tok = train_chatml_tokenizer(texts + ["user\n" + build_messages("x")[0]["content"]] * 20, vocab_size=768,
                                 split_digits=True)
    n = lambda t: len(tok(t, add_special_tokens=False)["input_ids"])  # noqa: E731
    for split in ("train", "test"):
        ps = SPLITS[split]
        short = statistics.fmean(n(write_trace("short", p.meta)) for p in ps)
        long = statistics.fmean(n(write_trace("long", p.meta, problem_id=p.id)) for p in ps)
        mid = statistics.fmean(n(write_trace("mid", p.meta)) for p in ps)
        assert 4.0 <= long / short <= 8.0, (split, long / short)
        assert short < mid < long


def test_unknown_style():
    with pytest.raises(UserError, match="unknown trace style 'huge'"):
        write_trace("huge", PROBLEMS[0].meta)
