"""micota bpc: equals a hand computation from the model's logits; the tokenization boundary; bad input."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from micota.records import BpcRecord, SftExample, read_jsonl

COMPLETIONS = ["So the answer is \\boxed{19}.", "Wait, let me check: 5 - 2 = 3. Yes. The final answer is \\boxed{3}.",
               "Three fours make 12, so the answer is \\boxed{12}. " * 3]


def _dataset(path, completions=COMPLETIONS):
    rows = [SftExample(id=f"r{i}", problem_id=f"p{i}", prompt=[{"role": "user", "content": f"What is {i} + 7?"}],
                       completion=[{"role": "assistant", "content": c}]) for i, c in enumerate(completions)]
    path.mkdir(parents=True, exist_ok=True)
    (path / "data.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in rows))
    return path


def test_bpc_equals_hand_computation_from_logits(tiny_model_dir, tmp_path):
    import torch

    from micota.generation.prompts import render_prompt
    from micota.models import load_model, load_tokenizer
    from micota.scoring.bpc import BpcConfig, compute_bpc

    ds = _dataset(tmp_path / "ds")
    summary = compute_bpc(BpcConfig(model=str(tiny_model_dir), data=str(ds), out=str(tmp_path / "bpc"), batch_size=3))
    recs = {r.id: r for r in read_jsonl(tmp_path / "bpc" / "bpc.jsonl", BpcRecord)}
    model, tok = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    for i, text in enumerate(COMPLETIONS):
        prompt = render_prompt(tok, [{"role": "user", "content": f"What is {i} + 7?"}])
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        full = tok(prompt + text, add_special_tokens=False)["input_ids"]
        assert full[:len(p_ids)] == p_ids
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([full])).logits[0].double(), -1)
        nats = -sum(float(logp[t - 1, full[t]]) for t in range(len(p_ids), len(full)))
        r = recs[f"r{i}"]
        assert r.chars == len(text) and r.tokens == len(full) - len(p_ids)
        assert r.bpc == pytest.approx(nats / math.log(2) / len(text), rel=1e-4)
        assert r.bpt == pytest.approx(nats / math.log(2) / r.tokens, rel=1e-4)
    assert summary["bpc_mean"] == pytest.approx(sum(r.bpc for r in recs.values()) / 3)
    assert summary["bpc_char_weighted"] == pytest.approx(sum(r.nll_bits for r in recs.values()) / sum(map(len, COMPLETIONS)))
    one = compute_bpc(BpcConfig(model=str(tiny_model_dir), data=str(ds), batch_size=1))  # unbatched, unpadded
    assert one["bpc_mean"] == pytest.approx(summary["bpc_mean"], rel=1e-5)
    assert json.loads((tmp_path / "bpc" / "manifest.json").read_text())["counts"]["records"] == 3


def test_boundary_every_completion_character_scored_once(tiny_model_dir):
    from micota.models import load_tokenizer
    from micota.training.data import encode_pair

    tok = load_tokenizer(tiny_model_dir)
    # " answer" is one token of the tiny vocabulary: joint tokenization merges across "So the ans" | "wer is 7"
    assert len(tok(" answer", add_special_tokens=False)["input_ids"]) == 1
    cases = [("So the ans", "wer is \\boxed{7}"), ("So the answer", " is \\boxed{7}")]
    merged, plain = (encode_pair(tok, p, c) for p, c in cases)
    assert merged.merged and not plain.merged
    for enc, (prompt, completion) in zip((merged, plain), cases):
        assert enc.ids[:enc.n_prompt] == tok(prompt, add_special_tokens=False)["input_ids"]
        assert tok.decode(enc.ids[enc.n_prompt:]) == completion  # no character twice, none skipped


@pytest.mark.parametrize("case,expect", [
    ("empty_completion", "empty completion"),
    ("missing_field", "field 'prompt'"),
    ("non_utf8", "not valid UTF-8"),
    ("all_too_long", "longer than 8 tokens"),
    ("no_template", "no chat template"),
])
def test_bpc_bad_input_cli(case, expect, tiny_model_dir, tmp_path, cli):
    ds, model, extra = tmp_path / "ds", tiny_model_dir, []
    if case == "empty_completion":
        _dataset(ds, ["fine", ""])
    elif case == "missing_field":
        ds.mkdir()
        (ds / "data.jsonl").write_text('{"id": "a", "problem_id": "p", "completion": [{"role": "assistant", "content": "x"}]}\n')
    elif case == "non_utf8":
        ds.mkdir()
        (ds / "data.jsonl").write_bytes(b'{"id": "\xc3\x28"}\n')
    elif case == "all_too_long":
        _dataset(ds)
        extra = ["--max-length", "8"]
    else:
        _dataset(ds)
        model = tmp_path / "nochat"
        shutil.copytree(tiny_model_dir, model)
        (model / "chat_template.jinja").unlink(missing_ok=True)
    r = cli("bpc", str(model), "--data", str(ds), "--out", str(tmp_path / "out"), *extra)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], r.stderr[-3000:]
    assert not (tmp_path / "out").exists()
