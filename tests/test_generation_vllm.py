"""The vllm backend's plumbing without vLLM (it cannot be installed on this CPU machine): a
stand-in ``vllm`` module records the engine arguments and requests, so we check that every engine
option is reachable from a config, that greedy n > 1 and per-sample seeds follow the shared
contract, and that a stage shuts its engine down. What vLLM itself does with them is not tested here."""

from __future__ import annotations

import types

import pytest

from micota.errors import UserError
from micota.generation.backends import SamplingParams, sample_seed
from micota.generation.runner import GenerateConfig, generate, load_samples
from micota.records import Problem, write_jsonl_atomic


class _Out:
    def __init__(self, text, token_ids, finish_reason):
        self.text, self.token_ids, self.finish_reason = text, token_ids, finish_reason


class _FakeVLLM(types.ModuleType):
    def __init__(self, tokenizer):
        super().__init__("vllm")
        fake = self
        self.engines: list = []
        self.destroyed = 0

        class SamplingParams:
            def __init__(self, **kw):
                self.kw = kw

        class LLM:
            def __init__(self, **kw):
                self.kw, self.requests, self.shut = kw, [], False
                self.llm_engine = types.SimpleNamespace(shutdown=lambda: setattr(self, "shut", True))
                fake.engines.append(self)

            def get_tokenizer(self):
                return tokenizer

            def generate(self, prompts, sps, use_tqdm=False):
                assert not self.shut
                self.requests += list(zip(prompts, [s.kw for s in sps]))
                return [types.SimpleNamespace(outputs=[_Out(f"seed={s.kw['seed']} len={len(p['prompt_token_ids'])}", [1, 2],
                                                            "length" if s.kw["max_tokens"] <= 2 else "stop")])
                        for p, s in zip(prompts, sps)]

        self.LLM, self.SamplingParams = LLM, SamplingParams


@pytest.fixture
def fake_vllm(monkeypatch, tiny_model_dir):
    import sys

    from micota.models import load_tokenizer

    mod = _FakeVLLM(load_tokenizer(tiny_model_dir))
    ps = types.ModuleType("vllm.distributed.parallel_state")
    ps.destroy_model_parallel = lambda: setattr(mod, "destroyed", mod.destroyed + 1)
    ps.destroy_distributed_environment = lambda: None
    monkeypatch.setitem(sys.modules, "vllm", mod)
    monkeypatch.setitem(sys.modules, "vllm.distributed", types.ModuleType("vllm.distributed"))
    monkeypatch.setitem(sys.modules, "vllm.distributed.parallel_state", ps)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return mod


def test_engine_options_from_config_and_engine_shut_down_at_stage_end(fake_vllm, tiny_model_dir, tmp_path, monkeypatch):
    import os

    probs = tmp_path / "p.jsonl"
    write_jsonl_atomic(probs, [Problem(id=f"q{i}", problem=f"What is {i}+1?", answer=str(i + 1)) for i in range(3)])
    cfg = GenerateConfig.build({
        "model": str(tiny_model_dir), "problems": str(probs), "out": str(tmp_path / "g"), "backend": "vllm",
        "n": 2, "temperature": 0.0, "max_new_tokens": 8, "tensor_parallel_size": 2, "gpu_memory_utilization": 0.55,
        "max_model_len": 4096, "device": "cuda:3", "dtype": "bf16",
        "vllm_args": {"enforce_eager": True, "enable_prefix_caching": True}})
    generate(cfg)
    (llm,) = fake_vllm.engines
    assert llm.kw == {"model": str(tiny_model_dir), "tensor_parallel_size": 2, "trust_remote_code": False,
                      "gpu_memory_utilization": 0.55, "dtype": "bfloat16", "max_model_len": 4096,
                      "enforce_eager": True, "enable_prefix_caching": True}
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert llm.shut and fake_vllm.destroyed == 1  # the stage that built the engine shut it down
    # greedy n=2: one request per prompt (n=1, no seed), the completion repeated
    assert len(llm.requests) == 3 and all(kw["n"] == 1 and kw["seed"] is None for _, kw in llm.requests)
    samples = load_samples(tmp_path / "g")
    by = {}
    for s in samples:
        by.setdefault(s.problem_id, []).append(s.completion)
    assert len(samples) == 6 and all(a == b for a, b in by.values())
    # a resumed, finished output never builds an engine
    generate(cfg)
    assert len(fake_vllm.engines) == 1


def test_sampled_requests_carry_per_sample_seeds_and_bad_options_are_one_line(fake_vllm, tiny_model_dir):
    from micota.generation.vllm_backend import VLLMBackend

    be = VLLMBackend(str(tiny_model_dir))
    out = be.generate(["a", "bb"], SamplingParams(n=3, temperature=0.7, top_p=0.8, max_new_tokens=2, seed=9))
    assert [[c.text.split()[0] for c in comps] for comps in out] == \
        [[f"seed={sample_seed(9, p, k)}" for k in range(3)] for p in ("a", "bb")]
    assert all(c.finish_reason == "length" and c.completion_tokens == 2 for comps in out for c in comps)
    kws = [kw for _, kw in fake_vllm.engines[0].requests]
    assert all((kw["n"], kw["temperature"], kw["top_p"], kw["max_tokens"]) == (1, 0.7, 0.8, 2) for kw in kws)
    be.close()
    be.close()  # idempotent
    with pytest.raises(UserError, match="vllm_args: max_model_len has its own option"):
        VLLMBackend(str(tiny_model_dir), engine_args={"max_model_len": 10})
    with pytest.raises(UserError, match="device 'cpu': the vllm backend takes auto, cuda, cuda:N"):
        VLLMBackend(str(tiny_model_dir), device="cpu")
