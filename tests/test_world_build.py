"""Building a world through the CLI: layout, tokenizer, model sizes, show, bad input, pretraining smoke."""

from __future__ import annotations

import json
import re

import pytest

from micota.data.world import WorldConfig, load_world
from micota.errors import UserError
from micota.records import Problem, SftExample, read_jsonl


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from tests.conftest import run_cli

    out = tmp_path_factory.mktemp("wb") / "world"
    r = run_cli("world", "build", "--out", str(out), "--quick", "--n-train", "80", "--n-dev", "10", "--n-test", "20",
                "--n-hard", "12", "--seed", "11")
    assert r.returncode == 0, r.stderr
    return out


def test_layout_manifest_and_traces(world):
    man = json.loads((world / "manifest.json").read_text())
    assert man["stage"] == "world" and man["complete"] and man["counts"] == {"train": 80, "dev": 10, "test": 20, "hard": 12}
    assert man["config"]["quick"] and man["config"]["seed"] == 11
    for split, n in man["counts"].items():
        ps = read_jsonl(world / "problems" / f"{split}.jsonl", Problem)
        assert len(ps) == n and all(p.source == f"world-{split}" and p.meta["ops"] for p in ps)
    from micota.training.data import read_sft_dataset

    for style in ("short", "mid", "long"):
        rows = read_sft_dataset(world / "traces" / style)  # what `micota train --data` reads
        assert len(rows) == 80 and rows[0].meta["style"] == style
        assert rows[0].prompt[0].content.startswith(rows[0].prompt[0].content.split("\n")[0])
    info = json.loads((world / "world.json").read_text())
    assert 4 <= info["lengths"]["train"]["long_short_ratio"] <= 8
    assert info["long_slips"]["traces_with_a_slip"] > 0
    # the pretraining corpus, two contexts. Default prompt: every corpus problem once, care ~ Beta(1, 9) (mean 0.1,
    # sd 0.0905), reflection = care, so a check needs care > 0.5. Cued (CUE_SYSTEM): every problem again, care and
    # reflection independent U(0, 1) (mean 0.5, sd 0.289); a check only above reflection 0.5. 1..3 operations; no split problem
    from micota.data.world.traces import CUE_SYSTEM

    corpus = read_jsonl(world / "pretrain" / "data.jsonl", SftExample)
    default = [r for r in corpus if r.meta["style"] == "graded"]
    cued = [r for r in corpus if r.meta["style"] == "cued"]
    assert len(corpus) == 1200 and len(default) == len(cued) == 600
    assert all(r.prompt[0].role != "system" for r in default)
    assert all(r.prompt[0].role == "system" and r.prompt[0].content == CUE_SYSTEM for r in cued)
    text = {r.id: r.completion[0].content for r in corpus}
    cares = [r.meta["care"] for r in default]
    assert all(0 <= c <= 1 for c in cares) and abs(sum(cares) / 600 - 0.1) < 4 * 0.0905 / 600 ** 0.5
    assert all(r.meta["reflect"] == r.meta["care"] for r in default)
    assert not any("Wait, let me check" in text[r.id] or "double-check" in text[r.id] for r in default if r.meta["care"] <= 0.5)
    cares, refl = [r.meta["care"] for r in cued], [r.meta["reflect"] for r in cued]
    for v in (cares, refl):
        assert all(0 <= c <= 1 for c in v) and abs(sum(v) / 600 - 0.5) < 4 * 0.289 / 600 ** 0.5
    cov = sum((c - 0.5) * (r - 0.5) for c, r in zip(cares, refl)) / 600
    assert abs(cov / 0.289 ** 2) < 4 / 600 ** 0.5  # independent draws: correlation within 4 SE of 0
    assert not any("Wait, let me check" in text[r.id] for r in cued if r.meta["reflect"] <= 0.5)
    # reflection without work: one-line steps followed by their checks (care < 0.1: p_work < 0.2; reflect > 0.75: p_check > 0.5)
    terse_checked = [r for r in cued if r.meta["reflect"] > 0.75 and r.meta["care"] < 0.1]
    assert any(re.search(r"^Step \d+: .* = \d+\.\nWait, let me check", text[r.id], re.M) for r in terse_checked)
    # recaps: E[max(0, 2r - 1)] = 0.25 of the multi-step cued traces (4 binomial SDs)
    multi = [text[r.id] for r in cued if "Step 2" in text[r.id]]
    share = sum("Let me double-check" in t for t in multi) / len(multi)
    assert abs(share - 0.25) <= 4 * (0.25 * 0.75 / len(multi)) ** 0.5, share
    assert {sum(ln.startswith("Step ") for ln in t.splitlines()) for t in text.values()} == {1, 2, 3}
    split_texts = {p.problem for s in man["counts"] for p in read_jsonl(world / "problems" / f"{s}.jsonl", Problem)}
    assert not split_texts & {r.prompt[-1].content.split("\n")[0] for r in corpus}


def test_tokenizer_roundtrips_and_splits_digits(world):
    w = load_world(world)
    tok = w.tokenizer
    assert 300 <= len(tok) <= 1024 and tok.chat_template and tok.eos_token == "<|im_end|>"
    ex = read_jsonl(world / "traces" / "long" / "data.jsonl", SftExample)[0]
    for text in (w.problems["hard"][0].problem, ex.completion[0].content):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    pieces = tok.tokenize("384 * 25 = 9600")
    assert [p for p in pieces if any(c.isdigit() for c in p)] == list("384259600")


def test_default_model_sizes(world):
    from micota.data.world.build import count_params
    from micota.models.tiny import tiny_qwen2_config

    tok = load_world(world).tokenizer
    cfg = WorldConfig(out=world)
    student = count_params(tiny_qwen2_config(tok, **cfg.model_shape("student")))
    ta = count_params(tiny_qwen2_config(tok, **cfg.model_shape("ta")))
    assert 0.4e6 <= student <= 0.6e6, student
    assert 0.7e6 <= ta <= 1.0e6, ta
    quick = json.loads((world / "world.json").read_text())["params"]
    assert quick["student"] < student and quick["ta"] < ta and quick["student"] < quick["ta"]
    saved = json.loads((world / "configs" / "ta.json").read_text())
    assert saved["vocab_size"] == len(tok) and saved["hidden_size"] == 128


def test_show_and_bad_input(world, cli, tmp_path):
    r = cli("world", "show", str(world))
    assert r.returncode == 0, r.stderr
    assert "long:short =" in r.stdout and "\\boxed{" in r.stdout and "## hard" in r.stdout
    r = cli("world", "build", "--out", str(world), "--quick")  # the rerun rule: a different config is an error
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert "finished with a different config (" in r.stderr and "--n-hard 12 → 60" in r.stderr and "pass --overwrite" in r.stderr
    r = cli("world", "build", "--out", str(tmp_path / "w2"), "--min-ops", "3", "--max-ops", "2")
    assert r.returncode == 2 and "min_ops" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "w2").exists()
    with pytest.raises(UserError, match="not a finished miniature world"):
        load_world(tmp_path)


def test_pretrain_smoke(world, tmp_path):
    from micota.data.world import PretrainConfig, pretrain_bases
    from micota.models import load_model

    out = pretrain_bases(PretrainConfig(world=str(world), out=str(tmp_path / "bases"), roles=["student"],
                                        student_steps=3, eval_limit=4, max_new_tokens=8, eval_styles=["long"],
                                        style_max_new_tokens=8, reuse=False))
    rep = json.loads((out / "pretrain_report.json").read_text())
    s = rep["models"]["student"]
    assert s["steps"] == 3 and s["accuracy_test"]["n"] == 4 and 0 <= s["accuracy_test"]["accuracy"] <= 1
    assert s["accuracy_test_long"]["n"] == 4 and s["accuracy_test_long"]["truncated"] == 1.0  # 8 tokens cut every trace
    assert json.loads((out / "manifest.json").read_text())["complete"]
    model = load_model(out / "student")
    assert sum(p.numel() for p in model.parameters()) == json.loads((world / "world.json").read_text())["params"]["student"]


def test_corpus_knobs(tmp_path):
    """pretrain_cued sets the cued share (its own random stream: the default-prompt rows do not move);
    pretrain_reflect_tied false draws the default context's reflection on its own (the corpus of bases
    f0a059ec3de74cd4 with pretrain_care_beta 4 and pretrain_cued 0)."""
    from micota.data.world.build import pretrain_corpus
    from micota.data.world.problems import generate_split

    cfg = WorldConfig(out=tmp_path / "w")
    problems = generate_split("pretrain", 400, cfg.pretrain_knobs(), seed=0, exclude=set())
    full = pretrain_corpus(cfg, problems)
    none = pretrain_corpus(WorldConfig(out=tmp_path / "w", pretrain_cued=0), problems)
    half = pretrain_corpus(WorldConfig(out=tmp_path / "w", pretrain_cued=0.5), problems)
    by_id = lambda rows: sorted((r.id, r.completion[0].content) for r in rows if r.meta["style"] == "graded")  # noqa: E731
    assert by_id(full) == by_id(none) == by_id(half) and len(by_id(none)) == len(none) == 400
    n_half = sum(r.meta["style"] == "cued" for r in half)
    assert abs(n_half - 200) <= 4 * 10  # Binomial(400, 0.5): sd 10
    free = pretrain_corpus(WorldConfig(out=tmp_path / "w", pretrain_reflect_tied=False, pretrain_care_beta=4, pretrain_cued=0), problems)
    assert sum(r.meta["reflect"] != r.meta["care"] for r in free) == len(free) == 400
    assert abs(sum(r.meta["care"] for r in free) / 400 - 0.2) < 4 * 0.163 / 20
