"""scoring.efficiency on hand-written completions: reflection markers, outcome efficiency, tokens per correct."""

from __future__ import annotations

import pytest

from micota.records import Sample
from micota.scoring.efficiency import efficiency_metrics, first_answer_end, outcome_share, reflection_count


def _s(text: str, correct: bool, tokens: int, extracted: str | None = None, pid: str = "p", idx: int = 0,
       reference: str = "12") -> Sample:
    return Sample(problem_id=pid, sample_idx=idx, model="m", prompt="q", completion=text, finish_reason="stop",
                  prompt_tokens=1, completion_tokens=tokens, correct=correct, extracted=extracted, reference=reference,
                  template_hash="t", config_hash="c", seed=0)


@pytest.mark.parametrize("text,count", [
    ("Wait, that is wrong. Let me double-check: yes.", 2),       # "let me double-check" counts once
    ("Hmm. Let me verify. Actually, let me re-examine it. Recap: 3.", 4),
    ("We awaited the result; the waiter said nothing.", 0),     # whole words only
    ("Let me check\nthe sum. WAIT. On second thought no.", 3),  # case-insensitive, line break inside a phrase
    ("That’s not right, I made a mistake.", 2),                 # typographic apostrophe
])
def test_reflection_count(text, count):
    assert reflection_count(text) == count


def test_first_answer_end_matches_whole_numbers_only():
    assert first_answer_end("112 then 12.5 then 12 and 12", "12") == len("112 then 12.5 then 12")
    assert first_answer_end("no answer", "12") is None
    assert first_answer_end("x = \\frac{1}{2} so", "\\frac{1}{2}") == len("x = \\frac{1}{2}")


def test_outcome_efficiency_on_hand_written_completions():
    # 40 characters; the answer 12 first ends at character 10, then is re-checked at length
    a = _s("3 + 9 = 12. Wait, let me check: 3+9=12.", True, 20, "12")
    assert len(a.completion) == 39 and outcome_share(a) == pytest.approx(10 / 39)
    b = _s("The answer is \\boxed{12}", True, 10, "12")
    assert outcome_share(b) == pytest.approx(len("The answer is \\boxed{12") / len(b.completion))
    c = _s("It is 13. \\boxed{13}", False, 10, "13")
    assert outcome_share(c) == 0.0
    m = efficiency_metrics([a, b, c])
    # ξ_O = (1/N) Σ σ_i T̂_i/T_i over all N = 3 responses
    assert m["outcome_efficiency"] == pytest.approx((10 / 39 + 23 / 24) / 3)
    assert m["tokens_per_correct"] == pytest.approx(40 / 2)
    assert m["reflections_per_1k_tokens"] == pytest.approx(1000 * 2 / 40)
    assert m["reflections_per_response"] == pytest.approx(2 / 3)
    assert m["responses_with_reflection"] == pytest.approx(1 / 3)
    assert efficiency_metrics([c])["tokens_per_correct"] is None


def test_tokens_by_level():
    ss = [_s("a", True, 10, pid="x"), _s("a", True, 30, pid="x", idx=1), _s("a", True, 5, pid="y")]
    m = efficiency_metrics(ss, levels={"x": 3, "y": 1})
    assert m["tokens_by_level"] == {"1": {"n": 1, "mean_tokens": 5.0}, "3": {"n": 2, "mean_tokens": 20.0}}
