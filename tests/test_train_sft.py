"""micota train: LoRA merged on save, torchrun data parallelism, resume, pre-flight and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from micota.errors import UserError
from micota.records import SftExample


def _dataset(path: Path, n: int = 8, *, long: int = 0) -> Path:
    rows = []
    for i in range(n):
        a, b = i + 2, 3 * i + 1
        text = f"{a} + {b} = {a + b}. The answer is \\boxed{{{a + b}}}." + " 0 1 2 3" * long
        rows.append(SftExample(id=f"ex{i}", problem_id=f"p{i}", prompt=[{"role": "user", "content": f"What is {a} + {b}?"}],
                               completion=[{"role": "assistant", "content": text}]))
    path.mkdir(parents=True, exist_ok=True)
    (path / "data.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in rows))
    return path


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def test_lora_output_is_a_plain_merged_model(tiny_model_dir, tmp_path):
    from micota.models import load_model
    from micota.training import TrainConfig, train

    out = train(TrainConfig(base=str(tiny_model_dir), data=str(_dataset(tmp_path / "ds")), out=str(tmp_path / "lora"),
                            lora_r=4, lr=5e-2, max_steps=3, batch_size=4, save_checkpoints=False))
    assert not list(out.glob("adapter_*")), "adapters must be merged into the weights"
    base, merged = _weights(tiny_model_dir), _weights(out)
    assert set(merged) == set(base)  # same tensor names: a plain model, no lora_A/lora_B
    changed = [k for k in base if not (base[k] == merged[k]).all()]
    assert any("q_proj" in k for k in changed)
    model = load_model(out)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert json.loads((out / "train_report.json").read_text())["lora"] is True


def test_torchrun_two_processes_split_the_data_like_one_process(tiny_model_dir, tmp_path):
    """2 ranks under torchrun (gloo): disjoint data, together the same steps as one process with the
    same global batch, and the same final weights."""
    ds = _dataset(tmp_path / "ds", n=8)
    common = ["--data", str(ds), "--lr", "1e-3", "--epochs", "2", "--seed", "3", "--logging-steps", "1",
              "--no-save-checkpoints", "--from-config", str(tiny_model_dir / "config.json"), "--tokenizer", str(tiny_model_dir)]
    env_one = {"MICOTA_TRAIN_TRACE_DIR": str(tmp_path / "trace1")}
    env_two = {"MICOTA_TRAIN_TRACE_DIR": str(tmp_path / "trace2"), "OMP_NUM_THREADS": "1"}
    import os

    two = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                            "-m", "micota", "train", *common, "--out", str(tmp_path / "two"), "--batch-size", "2"],
                           env={**os.environ, **env_two}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    from micota.training import TrainConfig, train

    os.environ.update(env_one)
    try:
        train(TrainConfig(data=str(ds), out=str(tmp_path / "one"), lr=1e-3, epochs=2, seed=3, logging_steps=1, batch_size=4,
                          save_checkpoints=False, from_config=str(tiny_model_dir / "config.json"), tokenizer=str(tiny_model_dir)))
    finally:
        del os.environ["MICOTA_TRAIN_TRACE_DIR"]
    _, err = two.communicate(timeout=300)
    assert two.returncode == 0, err[-3000:]

    one = json.loads((tmp_path / "trace1" / "rank0.json").read_text())
    r0, r1 = (json.loads((tmp_path / "trace2" / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["model_class"] == "DistributedDataParallel" and r0["param_sum"] == r1["param_sum"]
    assert len(r0["ids"]) == len(r1["ids"]) == 8  # 2 epochs x 4 examples per rank
    for epoch in range(2):
        a, b = r0["ids"][4 * epoch:4 * epoch + 4], r1["ids"][4 * epoch:4 * epoch + 4]
        assert not set(a) & set(b) and sorted(a + b) == sorted(f"ex{i}" for i in range(8))
    # step by step, the two ranks' micro-batches are the single process's batch
    for step in range(4):
        pair = r0["ids"][2 * step:2 * step + 2] + r1["ids"][2 * step:2 * step + 2]
        assert sorted(pair) == sorted(one["ids"][4 * step:4 * step + 4])
    w1, w2 = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) < 1e-5
    rep = json.loads((tmp_path / "two" / "train_report.json").read_text())
    assert rep["world_size"] == 2 and rep["steps"] == 4
    assert rep["supervised_tokens_seen"] == 2 * rep["supervised_tokens_per_epoch"]


def test_resume_continues_from_the_last_checkpoint(tiny_model_dir, tmp_path):
    """An interrupted run (2 of 4 steps, checkpoint kept) resumed to 4 steps equals an uninterrupted run."""
    from micota.training import TrainConfig, train

    ds = _dataset(tmp_path / "ds", n=8)
    base = dict(base=str(tiny_model_dir), data=str(ds), lr=1e-2, batch_size=2, lr_scheduler="constant", warmup_ratio=0.0,
                save_steps=2, seed=5)
    train(TrainConfig(**base, out=str(tmp_path / "full"), max_steps=4))
    train(TrainConfig(**base, out=str(tmp_path / "part"), max_steps=2, keep_checkpoints=True))
    ckpts = tmp_path / ".part.checkpoints"
    assert (ckpts / "checkpoint-2").is_dir()
    import shutil

    shutil.rmtree(tmp_path / "part")  # as if killed after the checkpoint, before finishing
    with pytest.raises(UserError, match="--resume"):
        train(TrainConfig(**base, out=str(tmp_path / "part"), max_steps=4))
    out = train(TrainConfig(**base, out=str(tmp_path / "part"), max_steps=4, resume=True))
    rep = json.loads((out / "train_report.json").read_text())
    assert rep["resumed_from"].endswith("checkpoint-2") and rep["steps"] == 4
    w_full, w_res = _weights(tmp_path / "full"), _weights(out)
    assert max(float((w_full[k] - w_res[k]).abs().max()) for k in w_full) < 1e-5
    assert not ckpts.exists()


def test_preflight_drops_long_examples_and_checks_supervision(tiny_model_dir, tmp_path):
    from micota.models import load_tokenizer
    from micota.training.data import read_sft_dataset
    from micota.training.sft import preflight

    tok = load_tokenizer(tiny_model_dir)
    short = read_sft_dataset(_dataset(tmp_path / "a", n=3))
    long = read_sft_dataset(_dataset(tmp_path / "b", n=2, long=40))
    rows, counts = preflight(tok, short + [ex.model_copy(update={"id": ex.id + "L"}) for ex in long], max_length=64)
    assert counts["examples_used"] == 3 and counts["dropped_too_long"] == 2
    for r in rows:  # completion mask = the completion's tokens + EOS, prompt masked
        ids, mask = r["input_ids"], r["completion_mask"]
        n = mask.index(1)
        assert set(mask[:n]) == {0} and set(mask[n:]) == {1}
        assert tok.decode(ids[n:]).endswith("<|im_end|>") and tok.decode(ids[:n]).endswith("<|im_start|>assistant\n")
    from micota.models.tiny import CHATML_TEMPLATE
    from micota.training.data import check_template

    tok.chat_template = None  # a base model without a chat template: --template or plain text
    with pytest.raises(UserError, match="no chat template"):
        check_template(tok, use_chat_template=True, template=None)
    rows_t, _ = preflight(tok, short, max_length=64, template=CHATML_TEMPLATE)
    assert [r["input_ids"] for r in rows_t] == [r["input_ids"] for r in rows]
    plain, _ = preflight(tok, short, max_length=64, use_chat_template=False)
    n = plain[0]["completion_mask"].index(1)
    assert tok.decode(plain[0]["input_ids"][:n]) == "What is 2 + 1?\n"
    bad = "{% for m in messages %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
    with pytest.raises(UserError, match="does not round-trip"):
        preflight(tok, short, max_length=64, template=bad)


BAD_ROWS = {
    "missing_field": '{"id": "a", "problem_id": "p", "prompt": [{"role": "user", "content": "q"}]}\n',
    "empty_completion": '{"id": "a", "problem_id": "p", "prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": "  "}]}\n',
}


@pytest.mark.parametrize("case", ["missing_field", "empty_completion", "non_utf8", "all_too_long", "no_template"])
def test_train_bad_input_is_one_line_exit_2(case, tiny_model_dir, tmp_path, cli):
    ds = tmp_path / "ds"
    model = tiny_model_dir
    extra: list[str] = []
    if case in BAD_ROWS:
        ds.mkdir()
        (ds / "data.jsonl").write_text(BAD_ROWS[case])
    elif case == "non_utf8":
        ds.mkdir()
        (ds / "data.jsonl").write_bytes(b'{"id": "a\xff\xfe", "problem_id": "p"}\n')
    elif case == "all_too_long":
        _dataset(ds, n=3, long=40)
        extra = ["--max-length", "32"]
    else:  # a base model whose tokenizer has no chat template, and no --template
        _dataset(ds, n=2)
        import shutil

        model = tmp_path / "nochat"
        shutil.copytree(tiny_model_dir, model)
        (model / "chat_template.jinja").unlink(missing_ok=True)
        cfgp = model / "tokenizer_config.json"
        cfg = json.loads(cfgp.read_text())
        cfg.pop("chat_template", None)
        cfgp.write_text(json.dumps(cfg))
    r = cli("train", str(model), "--data", str(ds), "--out", str(tmp_path / "out"), *extra)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-3000:]
    expect = {"missing_field": "completion", "empty_completion": "empty completion", "non_utf8": "UTF-8",
              "all_too_long": "--max-length 32", "no_template": "no chat template"}[case]
    assert expect in lines[0], lines[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()


def test_packing_keeps_examples_apart(tiny_model_dir, tmp_path):
    """All 6 examples in one batch: padded, or packed into one sequence. Before any update the loss is
    the same only if packed examples cannot attend to each other."""
    from micota.training import TrainConfig, train

    ds = _dataset(tmp_path / "ds", n=6)
    losses = {}
    for packing in (False, True):
        out = train(TrainConfig(base=str(tiny_model_dir), data=str(ds), out=str(tmp_path / f"p{packing}"), max_steps=1,
                                batch_size=6, max_length=512, packing=packing, save_checkpoints=False, logging_steps=1))
        rep = json.loads((out / "train_report.json").read_text())
        losses[packing] = rep["loss_curve"][0]["loss"]
        assert rep["tokens_seen"] == rep["tokens_per_epoch"]
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


def test_wrapped_packing_cuts_the_stream_into_full_rows(tiny_model_dir, tmp_path):
    """packing_strategy=wrapped (the world's bases, LLM pretraining): the examples are one stream cut into
    max_length rows, so an epoch at batch 1 is ceil(tokens / max_length) steps. Each example is ~41 tokens,
    so bfd rows (whole examples, one per 64-token row) would take 6 steps; wrapped needs 5."""
    import math

    from micota.training import TrainConfig, train

    ds = _dataset(tmp_path / "ds", n=6)
    out = train(TrainConfig(base=str(tiny_model_dir), data=str(ds), out=str(tmp_path / "w"), epochs=1, batch_size=1,
                            max_length=64, packing=True, packing_strategy="wrapped", save_checkpoints=False, logging_steps=1))
    rep = json.loads((out / "train_report.json").read_text())
    assert rep["packing_strategy"] == "wrapped"
    assert rep["tokens_seen"] == rep["tokens_per_epoch"]
    assert rep["steps"] == math.ceil(rep["tokens_per_epoch"] / 64) < 6
