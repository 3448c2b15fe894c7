"""micota eval end to end with a scripted backend (known right/wrong answers) through the real
runner, grader and summary; resume without regeneration; re-grading in another mode."""

from __future__ import annotations

import json

import pytest

from micota.errors import UserError
from micota.eval import EvalConfig, evaluate, regrade
from micota.generation.backends import Completion
from micota.models import load_tokenizer


class ScriptedBackend:
    """Answers from a fixed script: sample i of a problem is right iff right(problem_no, i)."""

    name = "scripted"
    model_id = "scripted"

    def __init__(self, tokenizer, answers):
        self.tokenizer, self.answers, self.calls = tokenizer, answers, 0

    def generate(self, prompts, params):
        self.calls += 1
        out = []
        for p in prompts:
            no, ans = self.answers[p]
            comps = []
            for i in range(params.n):
                right = (no + i) % 3 == 0
                cut = no == 4  # problem 4: the right box, but cut by the token limit
                text = f"So the answer is \\boxed{{{ans if right or cut else ans + '1'}}}"
                comps.append(Completion(text, "length" if cut else "stop", params.max_new_tokens if cut else 7 + no))
            out.append(comps)
        return out


@pytest.fixture()
def scripted(tiny_model_dir, data_dir):
    from micota.data.benchmarks import load_benchmark
    from micota.generation.prompts import build_messages, render_prompt

    tok = load_tokenizer(tiny_model_dir)
    answers = {}
    for b in ("gsm8k", "aime24"):
        for no, p in enumerate(load_benchmark(b, data_dir=data_dir, limit=6)):
            answers[render_prompt(tok, build_messages(p.problem))] = (no, p.answer)
    return ScriptedBackend(tok, answers)


def test_summary_counts_match_the_script_and_rerun_regrade(tmp_path, scripted, data_dir):
    out = tmp_path / "ev"
    cfg = EvalConfig(model="scripted", benchmarks=["gsm8k", "aime24"], out=out, limit=6, n=2, temperature=1.0,
                     max_new_tokens=50, data_dir=data_dir)
    s = evaluate(cfg, backend=scripted)
    # problems 0..5, samples i=0,1: right iff (no+i)%3==0 and no != 4 (truncated)
    right = {no: sum((no + i) % 3 == 0 and no != 4 for i in range(2)) for no in range(6)}
    exp_acc = sum(right.values()) / 12
    exp_pass = sum(v > 0 for v in right.values()) / 6
    for b in s.benchmarks:
        assert (b.n_problems, b.n_samples_per_problem) == (6, 2)
        assert b.accuracy == pytest.approx(exp_acc) and b.pass_at_k == pytest.approx(exp_pass)
        assert b.truncation_rate == pytest.approx(2 / 12)
        assert b.ci95[0] <= b.accuracy <= b.ci95[1]
        assert b.mean_completion_tokens == pytest.approx((sum(7 + no for no in range(6) if no != 4) * 2 + 100) / 12)
    assert [b.grade_mode for b in s.benchmarks] == ["gsm8k", "default"]
    assert s.macro_accuracy == pytest.approx(exp_acc)
    graded = [json.loads(x) for x in (out / "graded.jsonl").read_text().splitlines()]
    assert len(graded) == 24 and all(g["grade_reason"] == "truncated" for g in graded if g["finish_reason"] == "length")
    md = (out / "summary.md").read_text()
    assert "avg@2" in md and "pass@2" in md and "macro average" in md
    assert json.loads((out / "summary.json").read_text())["macro_accuracy"] == pytest.approx(exp_acc)
    calls = scripted.calls
    again = evaluate(cfg, backend=scripted)  # resume: every key done, nothing generated
    assert scripted.calls == calls and again.macro_accuracy == s.macro_accuracy
    top = (out / "summary.json").read_bytes()
    h = regrade(out, "hendrycks")
    assert [b.grade_mode for b in h.benchmarks] == ["hendrycks", "hendrycks"]
    # the regrade lands in grades/hendrycks/ beside the eval's own grades; the eval's summary is untouched
    assert (out / "summary.json").read_bytes() == top
    hs = json.loads((out / "grades" / "hendrycks" / "summary.json").read_text())
    assert [b["grade_mode"] for b in hs["benchmarks"]] == ["hendrycks", "hendrycks"]
    cmp = (out / "grades" / "COMPARISON.md").read_text()
    assert "| benchmark | n | benchmark | hendrycks |" in cmp and "[gsm8k]" in cmp and "[hendrycks]" in cmp
    # an eval rerun rewrites its own mode only, never the regrade
    before = (out / "grades" / "hendrycks" / "summary.json").read_bytes()
    evaluate(cfg, backend=scripted)
    assert (out / "grades" / "hendrycks" / "summary.json").read_bytes() == before
    with pytest.raises(UserError, match="unknown grading mode"):
        regrade(out, "nope")
    with pytest.raises(UserError, match="not a finished eval"):
        regrade(out / "gsm8k")


def test_protocol_presets_and_explicit_flags():
    r1 = EvalConfig(model="m", out="o", protocol="r1")
    assert (r1.temperature, r1.top_p, r1.max_new_tokens) == (0.6, 0.95, 32768)
    assert [r1.n_for(b) for b in ("aime24", "aime25", "amc23", "math500", "olympiadbench", "gsm8k")] == [64, 64, 64, 4, 4, 1]
    capped = EvalConfig(model="m", out="o", protocol="r1", max_new_tokens=256, n=4)
    assert (capped.max_new_tokens, capped.temperature, capped.n_for("aime24"), capped.n_for("gsm8k")) == (256, 0.6, 4, 4)
    paper = EvalConfig(model="m", out="o", protocol="micota-paper")
    assert (paper.temperature, paper.max_new_tokens, paper.mode_labels()) == (0.0, 16384, ["benchmark", "hendrycks"])
    assert EvalConfig(model="m", out="o", protocol="greedy").mode_labels() == ["benchmark"]
    # the preset survives the manifest round trip (regrade rebuilds the config from it)
    again = EvalConfig.build(r1.model_dump(mode="json"), prefix="manifest")
    assert again.n_per_benchmark == r1.n_per_benchmark and again.config_hash() == r1.config_hash()
    with pytest.raises(Exception, match="protocol"):
        EvalConfig(model="m", out="o", protocol="r2")


def _sample(pid, idx, extracted, correct):
    from micota.records import Sample

    return Sample(problem_id=pid, sample_idx=idx, model="m", prompt="q", completion=f"\\boxed{{{extracted}}}",
                  finish_reason="stop", prompt_tokens=1, completion_tokens=5, template_hash="t", config_hash="c",
                  seed=0, reference="\\frac{1}{2}", extracted=extracted, correct=correct)


def test_maj_at_k_groups_answers_by_grader_equivalence():
    from micota.eval import majority_correct

    answers = ["3", "\\frac{1}{2}", "0.5", "3", "1/2"]  # by string 3 wins 2:1; by value 1/2 wins 3:2
    ss = [_sample("p", i, a, a != "3") for i, a in enumerate(answers)]
    tie = [_sample("q", i, a, a != "3") for i, a in enumerate(["3", "0.5", "\\frac12", "3"])]  # 2:2, first group wins
    assert majority_correct({"p": ss, "q": tie}, "default") == {"p": True, "q": False}
    g = [_sample("r", i, a, a != "4") for i, a in enumerate(["\\frac{1}{4}", "0.25", "4", "4"])]
    assert majority_correct({"r": g}, "gsm8k") == {"r": True}  # 1/4 = 0.25 form the first group of two


def test_protocol_run_limits_warnings_and_settings(tmp_path, scripted, data_dir):
    out = tmp_path / "r1"
    cfg = EvalConfig(model="scripted", benchmarks=["gsm8k", "aime24"], out=out, limit=6, protocol="r1",
                     max_new_tokens=50, n_per_benchmark={"aime24": 3}, data_dir=data_dir)
    s = evaluate(cfg, backend=scripted)
    g, a = s.benchmarks
    assert (g.n_samples_per_problem, a.n_samples_per_problem, g.n_samples, a.n_samples) == (1, 3, 6, 18)
    assert g.ci_method == "wilson" and g.maj_at_k is None
    # aime24, k = 3: sample i right iff (no+i)%3==0 → exactly one right per problem (but problem 4 is cut);
    # the two wrong samples give the same wrong answer, so the majority is wrong everywhere
    assert a.maj_at_k == 0.0 and a.maj_at_k_ci95[1] > 0.3  # Wilson, not a degenerate 0–0
    assert any("aime24: n = 3" in w for w in a.warnings) and any("token limit" in w for w in a.warnings)
    man = json.loads((out / "manifest.json").read_text())
    assert man["sampling"]["temperature"] == 0.6 and man["sampling"]["n"] == {"gsm8k": 1, "aime24": 3}
    assert len(man["benchmark_files"]["gsm8k"]["sha256"]) == 64
    md = (out / "summary.md").read_text()
    assert "temperature = `0.6`" in md and "sha256" in md and "## Warnings" in md and "tokens per correct" in md
    # a later run with a smaller --limit summarises only its own problems
    small = evaluate(cfg.model_copy(update={"limit": 2}), backend=scripted)
    assert [b.n_problems for b in small.benchmarks] == [2, 2]
