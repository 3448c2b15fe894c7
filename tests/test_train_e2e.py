"""Training end to end: a tiny model memorises a small set (loss falls, greedy reproduces it), then
generate -> filter -> train -> bpc runs on it, and SmolLM2 trains and scores for a few steps."""

from __future__ import annotations

import json
import math

import pytest

from micota.generation.prompts import build_messages, render_prompt
from micota.manifest import is_complete, read_manifest
from micota.records import read_jsonl, SftExample

PROBLEMS = [
    ("p0", "What is 12 + 7?", "19", "Add the ones: 2 + 7 = 9. So \\boxed{19}."),
    ("p1", "Compute 3 * 4.", "12", "Three fours make 12, so the answer is \\boxed{12}."),
    ("p2", "What is 5 - 2?", "3", "Wait, let me check: 5 - 2 = 3. \\boxed{3}"),
    ("p3", "What is 2 + 7?", "9", "The answer is \\boxed{9}."),
]


@pytest.fixture(scope="module")
def memorised(tmp_path_factory, tiny_model_dir):
    """Train a random init of the tiny config on the 4 worked problems until it has memorised them."""
    from micota.training import TrainConfig, train

    d = tmp_path_factory.mktemp("mem")
    rows = [SftExample(id=pid, problem_id=pid, prompt=build_messages(q), completion=[{"role": "assistant", "content": c}])
            for pid, q, _, c in PROBLEMS]
    (d / "ds").mkdir()
    (d / "ds" / "data.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in rows))
    (d / "problems.jsonl").write_text("".join(json.dumps({"id": pid, "problem": q, "answer": a}) + "\n" for pid, q, a, _ in PROBLEMS))
    out = train(TrainConfig(from_config=str(tiny_model_dir / "config.json"), tokenizer=str(tiny_model_dir), data=str(d / "ds"),
                            out=str(d / "model"), lr=1e-2, epochs=60, batch_size=4, warmup_ratio=0.05, logging_steps=5,
                            save_checkpoints=False, seed=1))
    return d, out


def test_memorisation_loss_falls_and_greedy_reproduces(memorised):
    from micota.models import load_model, load_tokenizer

    d, out = memorised
    report = json.loads((out / "train_report.json").read_text())
    curve = [c["loss"] for c in report["loss_curve"]]
    assert curve[0] > 4.0 and curve[-1] < 0.2 * curve[0], curve
    assert report["examples_used"] == 4 and report["dropped_too_long"] == 0
    assert report["tokens_seen"] == 60 * report["tokens_per_epoch"]
    assert report["supervised_tokens_seen"] == 60 * report["supervised_tokens_per_epoch"]
    assert (out / "loss.png").stat().st_size > 1000 and is_complete(out)
    assert not (out / "training_args.bin").exists() and list(out.glob("*.safetensors"))
    assert not (out.parent / ".model.checkpoints").exists() and not (out.parent / ".model.partial").exists()
    model, tok = load_model(out), load_tokenizer(out)
    for _, q, _, c in PROBLEMS:
        ids = tok(render_prompt(tok, build_messages(q)), return_tensors="pt", add_special_tokens=False)
        gen = model.generate(**ids, max_new_tokens=40, do_sample=False)
        assert tok.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True) == c


def test_generate_filter_train_bpc_tiny_then_smollm2(memorised, tiny_model_dir, smollm2_dir, cli, tmp_path):
    from micota.filtering import FilterConfig, filter_samples
    from micota.generation.runner import GenerateConfig, generate
    from micota.models import load_model
    from micota.scoring.bpc import BpcConfig, compute_bpc
    from micota.training import TrainConfig, train

    d, model = memorised
    samples = generate(GenerateConfig(model=str(model), problems=str(d / "problems.jsonl"), out=tmp_path / "gen", n=2,
                                      max_new_tokens=40, batch_size=8))
    ds = filter_samples(FilterConfig(samples=str(samples), out=str(tmp_path / "ds"), per_problem="all"))
    report = json.loads((ds / "filter_report.json").read_text())
    assert report["samples_run_complete"] is True
    assert report["samples"] == 8 and report["kept"] == 4 and report["dropped"] == {"duplicate": 4}, report
    rows = read_jsonl(ds / "data.jsonl", SftExample)
    assert sorted(r.completion[0].content for r in rows) == sorted(c for *_, c in PROBLEMS)
    assert rows[0].prompt[0].content == build_messages(PROBLEMS[0][1])[0]["content"]
    assert rows[0].meta["model"] == str(model) and is_complete(ds)

    # CLI train of the tiny base on the filtered data, then CLI bpc of the trained model
    r = cli("train", str(tiny_model_dir), "--data", str(ds), "--out", str(tmp_path / "student"), "--lr", "1e-3",
            "--max-steps", "3", "--batch-size", "2", "--logging-steps", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    student = tmp_path / "student"
    assert read_manifest(student)["stage"] == "train" and json.loads((student / "train_report.json").read_text())["steps"] == 3
    r = cli("bpc", str(student), "--data", str(ds), "--out", str(tmp_path / "bpc"), "--batch-size", "3")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((tmp_path / "bpc" / "summary.json").read_text())
    assert summary["n"] == 4 and 0 < summary["bpc_mean"] < 20 and summary["bpc_ci95"][0] <= summary["bpc_mean"] <= summary["bpc_ci95"][1]
    assert json.loads(r.stdout)["bpc_mean"] == summary["bpc_mean"]

    # SmolLM2 for a few steps on the same data, then BPC of the data under it
    out = train(TrainConfig(base=str(smollm2_dir), data=str(ds), out=str(tmp_path / "smol"), lr=1e-5, max_steps=2,
                            batch_size=1, max_length=512, save_checkpoints=False, logging_steps=1))
    rep = json.loads((out / "train_report.json").read_text())
    assert rep["steps"] == 2 and all(math.isfinite(c["loss"]) and c["loss"] > 0 for c in rep["loss_curve"])
    assert load_model(out).config.model_type == "llama"
    s = compute_bpc(BpcConfig(model=str(smollm2_dir), data=str(ds), batch_size=4))
    assert s["n"] == 4 and 0.1 < s["bpc_char_weighted"] < 8
