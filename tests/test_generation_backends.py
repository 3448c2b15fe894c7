"""The hf backend on the tiny model: batching, left padding, EOS handling, seeded sampling."""

from __future__ import annotations

import pytest

from micota.errors import UserError
from micota.generation.backends import BACKENDS, HFBackend, SamplingParams, make_backend, register_backend

PROMPTS = ["What is 1+1?", "Compute 3 * 4, then add the ones and the tens of 12 + 7.", "x",
           "the answer is of and to the a", "Wait, let me check: 5 - 2 = 3."]


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return make_backend("hf", str(tiny_model_dir), batch_size=4)


def test_batched_left_padded_greedy_equals_one_at_a_time(backend):
    params = SamplingParams(max_new_tokens=12)
    batched = backend.generate(PROMPTS, params)  # lengths differ: rows are left-padded
    single = [backend.generate([p], params)[0] for p in PROMPTS]
    assert batched == single
    assert all(len(c) == 1 for c in batched)
    assert {c[0].text for c in batched} != {batched[0][0].text}  # outputs differ per prompt: order is kept
    assert all(c[0].finish_reason == "length" and c[0].completion_tokens == 12 for c in batched)
    twice = backend.generate(PROMPTS[:2], SamplingParams(n=2, max_new_tokens=12))  # greedy n=2: the same text twice
    assert twice == [[batched[0][0]] * 2, [batched[1][0]] * 2]


def test_stops_on_any_eos_id_from_generation_config(tiny_model_dir):
    from micota.models import load_model, load_tokenizer

    tok, model = load_tokenizer(tiny_model_dir), load_model(tiny_model_dir)
    first = HFBackend(str(tiny_model_dir), model_obj=model, tokenizer=tok).generate(PROMPTS[:1], SamplingParams(max_new_tokens=4))[0][0]
    first_id = tok(first.text, add_special_tokens=False)["input_ids"][0]
    model.generation_config.eos_token_id = [tok.eos_token_id, first_id]  # the token it emits first now ends the turn
    be = HFBackend(str(tiny_model_dir), model_obj=model, tokenizer=tok, batch_size=8)
    assert first_id in be.eos_ids and tok.eos_token_id in be.eos_ids
    out = be.generate(PROMPTS, SamplingParams(max_new_tokens=6))
    stopped = out[0][0]
    assert (stopped.finish_reason, stopped.completion_tokens, stopped.text) == ("stop", 1, "")
    assert any(c[0].finish_reason == "length" for c in out)  # other prompts still run to the limit


def test_seeded_sampling_is_reproducible_and_seed_dependent(backend):
    p = SamplingParams(n=3, temperature=1.0, top_p=0.95, max_new_tokens=10, seed=7)
    a, b = backend.generate(PROMPTS, p), backend.generate(PROMPTS, p)
    assert a == b
    assert all(len(x) == 3 for x in a)
    assert len({c.text for c in a[1]}) > 1  # n samples of one prompt differ
    c = backend.generate(PROMPTS, SamplingParams(n=3, temperature=1.0, top_p=0.95, max_new_tokens=10, seed=8))
    assert c != a


def test_registry_errors_and_custom_backend(tiny_model_dir):
    with pytest.raises(UserError, match="unknown backend 'nope'.*hf"):
        make_backend("nope", "m")
    with pytest.raises(UserError, match=r"micota\[vllm\]"):
        make_backend("vllm", str(tiny_model_dir))
    with pytest.raises(UserError, match="n must be >= 1"):
        SamplingParams(n=0)
    register_backend("wrapped", lambda model, **kw: HFBackend(model, **kw))
    try:
        assert make_backend("wrapped", str(tiny_model_dir)).name == "hf"
    finally:
        BACKENDS.pop("wrapped")


def test_sample_does_not_depend_on_batch_and_seed_is_per_sample(backend):
    from micota.generation.backends import sample_seed

    p = SamplingParams(n=2, temperature=1.0, max_new_tokens=10, seed=3)
    alone = backend.generate(PROMPTS[2:3], p)[0]
    in_batch = backend.generate(PROMPTS, p)[2]  # other rows, other padding, another position
    assert alone == in_batch and alone[0] != alone[1]
    # sha256("3\0k\0prompt")[:8] as an int, computed independently
    import hashlib
    assert sample_seed(3, "x", 1) == int(hashlib.sha256(b"3\x001\x00x").hexdigest()[:8], 16)


def test_row_sampler_draws_from_the_top_p_softmax():
    """Gumbel-max over the warped scores is an exact draw: frequencies match softmax(logits / T)
    restricted to the top-p nucleus (hand-computed), and tokens outside it never appear."""
    import math

    import torch

    from micota.generation.backends import RowSampler

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -3.0]])
    draws = 4000
    counts = [0] * 5
    for s in range(draws // 100):
        rs = RowSampler([s * 100 + j for j in range(100)], temperature=0.5, top_p=0.9)
        picks = rs(None, logits.repeat(100, 1)).argmax(-1).tolist()
        for t in picks:
            counts[t] += 1
    w = [math.exp(x / 0.5) for x in (2.0, 1.0, 0.0, -1.0, -3.0)]
    p = [x / sum(w) for x in w]  # 0.8650, 0.1171, 0.0158, ...: the nucleus for 0.9 is tokens 0 and 1
    nucleus = p[0] + p[1]
    assert counts[2:] == [0, 0, 0]
    for t in (0, 1):
        expect = p[t] / nucleus
        sd = math.sqrt(expect * (1 - expect) / draws)
        assert abs(counts[t] / draws - expect) < 4 * sd, (counts, expect)
