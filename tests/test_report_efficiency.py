"""report.efficiency: the efficiency section and plot, and the learnability rank correlations."""

from __future__ import annotations

import pytest

from micota.records import Sample
from micota.report.efficiency import efficiency_section, learnability_section, spearman


def _s(pid, correct, tokens, text, source="gsm8k"):
    return Sample(problem_id=pid, sample_idx=0, model="m", prompt="q", completion=text, finish_reason="stop",
                  prompt_tokens=1, completion_tokens=tokens, template_hash="t", config_hash="c", seed=0,
                  reference="4", extracted="4" if correct else "5", correct=correct, source=source)


def test_efficiency_section_numbers_and_plot(tmp_path):
    models = {
        "TA fine-tuned": [_s("a", True, 100, "2+2=4. Wait, let me check. 4."), _s("b", False, 300, "5")],
        "student: mid": [_s("a", True, 40, "4"), _s("b", True, 60, "so 4"), _s("c", True, 50, "4", source="math500")],
    }
    md, data = efficiency_section(models, tmp_path)
    ta = data["models"]["TA fine-tuned"]["gsm8k"]
    assert ta["accuracy"] == 0.5 and ta["tokens_per_correct"] == 400 and ta["mean_tokens"] == 200
    assert ta["reflections_per_response"] == 1.0  # "Wait" and "let me check" in one of two responses
    mid = data["models"]["student: mid"]
    assert mid["gsm8k"]["tokens_per_correct"] == 50 and set(mid) == {"gsm8k", "math500"}
    assert (tmp_path / "accuracy_vs_tokens.png").stat().st_size > 1000
    assert "| TA fine-tuned | gsm8k | 2 | 50.0 (" in md and "accuracy_vs_tokens.png" in md


def test_spearman_hand_values_and_learnability_table():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # ties: ranks x = (1.5, 1.5, 3), y = (1, 2, 3): rho = corr((1.5,1.5,3),(1,2,3)) = 0.866
    assert spearman([5, 5, 9], [1, 2, 3]) == pytest.approx(0.8660254)
    assert spearman([1, 2], [1, 2]) is None and spearman([1, 1, 1], [1, 2, 3]) is None
    md, data = learnability_section(
        {"long": {"bpc_mean": 0.9, "rsr_mean": 3.0}, "mid": {"bpc_mean": 0.6, "rsr_mean": 2.0},
         "short": {"bpc_mean": 0.5, "rsr_mean": 4.0}},
        {"long": 0.30, "mid": 0.40, "short": 0.45})
    assert data["correlations"]["bpc_mean"]["spearman"] == pytest.approx(-1.0)
    # rsr ranks (2, 1, 3) vs accuracy ranks (1, 2, 3): 1 - 6·2 / (3·8) = +0.5
    assert data["correlations"]["rsr_mean"]["spearman"] == pytest.approx(0.5)
    assert "| bpc_mean | -1.00 | 3 |" in md
