"""--backend openai against real `transformers serve` processes with the embedded SmolLM2:
greedy parity with the hf backend, a server killed mid-run then restarted and resumed, two
servers sharing one run, and the one-line errors (wrong model name, nothing listening)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import free_port

pytestmark = pytest.mark.slow

N_PROBLEMS = 12
TOKENS = "24"


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(out.glob("samples-*.jsonl")) for line in f.read_text().splitlines() if line]


def _gen_args(model: Path, data_dir: Path, out: Path, *urls: str, extra: tuple[str, ...] = (), limit: int = N_PROBLEMS) -> list[str]:
    args = [sys.executable, "-m", "micota", "generate", str(model), "--problems", "gsm8k", "--data-dir", str(data_dir),
            "--limit", str(limit), "--out", str(out), "--backend", "openai", "--max-new-tokens", TOKENS, *extra]
    for u in urls:
        args += ["--server-url", u]
    return args


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def hf_reference(smollm2_dir, data_dir, tmp_path_factory) -> dict[str, dict]:
    """The same problems, greedy, through the in-process hf backend (batch 4): the parity reference."""
    from micota.generation.runner import GenerateConfig, generate

    out = tmp_path_factory.mktemp("hf") / "gen"
    generate(GenerateConfig(model=str(smollm2_dir), problems="gsm8k", data_dir=data_dir, limit=N_PROBLEMS, out=out,
                            max_new_tokens=int(TOKENS), batch_size=4, dtype="float32"))
    return {r["problem_id"]: r for r in _rows(out)}


def test_two_servers_share_the_work_and_match_the_hf_backend(smollm2_dir, data_dir, tmp_path, start_server, hf_reference):
    a, b = start_server(smollm2_dir, "a"), start_server(smollm2_dir, "b")
    out = tmp_path / "gen"
    r = subprocess.run(_gen_args(smollm2_dir, data_dir, out, a.url, b.url, extra=("--concurrency", "2", "--batch-size", "3")),
                       capture_output=True, text=True, timeout=600, env=_env())
    assert r.returncode == 0, r.stderr[-2000:]
    rows = _rows(out)
    assert sorted(x["problem_id"] for x in rows) == sorted(hf_reference)  # every key once
    # greedy n=1: one request per problem, spread over both servers
    assert (a.completions_served(), b.completions_served()) == (N_PROBLEMS // 2, N_PROBLEMS // 2)
    # parity with the hf backend: same prompt text, same tokens, same completion and accounting
    for x in rows:
        ref = hf_reference[x["problem_id"]]
        assert x["prompt"] == ref["prompt"] and x["prompt_tokens"] == ref["prompt_tokens"]
        assert (x["completion"], x["finish_reason"], x["completion_tokens"]) == \
            (ref["completion"], ref["finish_reason"], ref["completion_tokens"]), x["problem_id"]
    man = json.loads((out / "manifest.json").read_text())
    assert man["complete"] and man["counts"]["samples"] == N_PROBLEMS and man["backend"] == "openai"


def test_server_killed_mid_run_then_restarted_resumes_without_loss_or_duplicates(smollm2_dir, data_dir, tmp_path,
                                                                                  start_server, hf_reference):
    srv = start_server(smollm2_dir, "s1")
    out = tmp_path / "gen"
    args = _gen_args(smollm2_dir, data_dir, out, srv.url, extra=("--concurrency", "1", "--batch-size", "1", "--max-retries", "1"))
    client = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    shard = out / "samples-00000.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and client.poll() is None and not (shard.exists() and len(_rows(out)) >= 2):
        time.sleep(0.05)
    assert client.poll() is None, "the client finished before the server could be killed: make the job bigger"
    srv.kill()  # SIGKILL: the request in flight is lost
    _, err = client.communicate(timeout=120)
    assert client.returncode == 2, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "no answer from" in lines[0] and "Traceback" not in err
    kept = _rows(out)
    assert 2 <= len(kept) < N_PROBLEMS and not (out / "manifest.json").exists()

    start_server(smollm2_dir, "s2", port=srv.port)  # the same address comes back
    r = subprocess.run(args, capture_output=True, text=True, timeout=600, env=_env())
    assert r.returncode == 0, r.stderr[-2000:]
    rows = _rows(out)
    keys = [(x["problem_id"], x["sample_idx"]) for x in rows]
    assert len(keys) == len(set(keys)) == N_PROBLEMS and {k for k, _ in keys} == set(hf_reference)
    assert rows[:len(kept)] == kept  # the rows written before the kill are untouched
    assert json.loads((out / "manifest.json").read_text())["counts"]["generated_this_run"] == N_PROBLEMS - len(kept)
    assert {x["problem_id"]: x["completion"] for x in rows} == {k: v["completion"] for k, v in hf_reference.items()}


def test_wrong_model_name_and_dead_server_are_one_line_errors(smollm2_dir, data_dir, tmp_path, start_server):
    srv = start_server(smollm2_dir, "s")
    r = subprocess.run(_gen_args(smollm2_dir, data_dir, tmp_path / "a", srv.url, extra=("--served-model-name", "nope")),
                       capture_output=True, text=True, timeout=300, env=_env())
    assert r.returncode == 2 and "Traceback" not in r.stderr
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith("error: server http://127.0.0.1") and "HTTP 400" in err and "'nope'" in err
    assert not (tmp_path / "a" / "manifest.json").exists()

    dead = f"http://127.0.0.1:{free_port()}/v1"
    # a dead server among live ones is routed around: each retry goes to the next server
    r = subprocess.run(_gen_args(smollm2_dir, data_dir, tmp_path / "d", dead, srv.url, extra=("--max-retries", "1"), limit=4),
                       capture_output=True, text=True, timeout=300, env=_env())
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted((x["problem_id"], x["sample_idx"]) for x in _rows(tmp_path / "d")) == [(f"gsm8k-test-{i}", 0) for i in range(4)]
    assert srv.completions_served() == 4

    t0 = time.time()
    r = subprocess.run(_gen_args(smollm2_dir, data_dir, tmp_path / "b", dead, extra=("--max-retries", "0")),
                       capture_output=True, text=True, timeout=300, env=_env())
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: no answer from {dead} after 1 tries (ConnectError")
    assert time.time() - t0 < 120

    r = subprocess.run(_gen_args(smollm2_dir, data_dir, tmp_path / "c"), capture_output=True, text=True, timeout=300, env=_env())
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == \
        "error: backend 'openai' needs --server-url BASE_URL (e.g. http://127.0.0.1:8000/v1), repeatable"


def test_prompt_goes_as_token_ids_when_the_server_would_add_a_second_bos(tiny_model_dir):
    """server_prompt=auto sends text unless the server's default tokenization (special tokens added)
    differs from ours; a tokenizer that prepends BOS to a chat prompt already starting with it does."""
    from micota.errors import UserError
    from micota.generation.backends import prompt_token_ids
    from micota.generation.openai_backend import OpenAIBackend
    from micota.generation.prompts import build_messages, render_prompt
    from micota.models import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    prompt = render_prompt(tok, build_messages("What is 2+2?"))

    class AddsBos:  # a Llama-style tokenizer: BOS = the text the chat template starts with, added by default
        bos_token = "<|im_start|>"

        def __call__(self, text, add_special_tokens=True):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            return {"input_ids": ([tok.convert_tokens_to_ids(self.bos_token)] if add_special_tokens else []) + ids}

    def be(mode, t):
        return OpenAIBackend(str(tiny_model_dir), server_url="http://127.0.0.1:9/v1", tokenizer=t, server_prompt=mode)

    assert be("auto", tok)._payload(prompt) == prompt  # the server would tokenize it as we do
    ids = be("auto", AddsBos())._payload(prompt)
    assert ids == prompt_token_ids(AddsBos(), prompt) == tok(prompt, add_special_tokens=False)["input_ids"]
    assert be("tokens", tok)._payload(prompt) == prompt_token_ids(tok, prompt)
    assert be("text", AddsBos())._payload(prompt) == prompt
    with pytest.raises(UserError, match="expected an http:// or https:// base URL"):
        be("auto", tok).__class__(str(tiny_model_dir), server_url="127.0.0.1:8000", tokenizer=tok)
