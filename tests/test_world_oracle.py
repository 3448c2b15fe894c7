"""The oracle teacher as a generation backend, through the real runner and filter stage."""

from __future__ import annotations

import pytest

from micota.data.world import WorldConfig, build_world, load_world
from micota.errors import UserError
from micota.records import Sample, SftExample, read_jsonl


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world") / "w"
    return build_world(WorldConfig(out=out, quick=True, n_train=60, n_test=20, n_hard=10, seed=5))


def _generate(world, style, out, **kw):
    from micota.generation.runner import GenerateConfig, generate, load_samples

    cfg = GenerateConfig(model=f"oracle:{style}:{world}", backend="oracle", out=out, **kw)
    return load_samples(generate(cfg))


def test_oracle_samples_pass_the_filter(world, tmp_path):
    from micota.filtering import FilterConfig, filter_samples

    samples = _generate(world, "long", tmp_path / "gen", problems=str(world / "problems" / "test.jsonl"), n=3)
    assert len(samples) == 60 and {s.finish_reason for s in samples} == {"stop"}
    tok = load_world(world).tokenizer
    for s in samples[:10]:
        assert s.completion_tokens == len(tok(s.completion, add_special_tokens=False)["input_ids"]) + 1
        assert s.completion.endswith(f"\\boxed{{{s.reference}}}.")
    by_problem = {}
    for s in samples:
        by_problem.setdefault(s.problem_id, set()).add(s.completion)
    assert any(len(v) > 1 for v in by_problem.values())  # other samples slip elsewhere
    ds = filter_samples(FilterConfig(samples=str(tmp_path / "gen"), out=str(tmp_path / "ds"), per_problem="all"))
    kept = read_jsonl(ds / "data.jsonl", SftExample)
    assert len(kept) == sum(len(v) for v in by_problem.values())  # all kept but exact duplicates
    assert {k.problem_id for k in kept} == set(by_problem)


def test_oracle_long_seed_matches_world_dataset_and_truncates(world, tmp_path):
    train = world / "problems" / "train.jsonl"
    got = _generate(world, "long", tmp_path / "a", problems=str(train), limit=15, seed=5)
    want = {e.problem_id: e.completion[0].content for e in read_jsonl(world / "traces" / "long" / "data.jsonl", SftExample)}
    assert all(s.completion == want[s.problem_id] for s in got)
    cut = _generate(world, "long", tmp_path / "b", problems=str(train), limit=5, max_new_tokens=20)
    assert all(s.finish_reason == "length" and s.completion_tokens == 20 for s in cut)
    short = _generate(world, "short", tmp_path / "c", problems=str(world / "problems" / "hard.jsonl"))
    assert all(s.completion.count("\n") >= 2 and s.finish_reason == "stop" for s in short)  # hard: 2-3 operations


def test_oracle_bad_specs_and_unknown_prompt(world, tmp_path):
    from micota.data.world.oracle import OracleBackend
    from micota.generation.backends import SamplingParams, make_backend

    with pytest.raises(UserError, match="expected oracle:<style>:<world_dir>"):
        make_backend("oracle", f"oracle:huge:{world}")
    with pytest.raises(UserError, match="not a finished miniature world"):
        OracleBackend(f"oracle:long:{tmp_path}")
    be = make_backend("oracle", f"oracle:mid:{world}")
    with pytest.raises(UserError, match="no problem of this world"):
        be.generate(["What is 2 + 2?"], SamplingParams())
    p = load_world(world).problems["hard"][3]
    [[c]] = be.generate([f"<|im_start|>user\n{p.problem}\nPlease reason.<|im_end|>"], SamplingParams())
    assert c.text.endswith(f"\\boxed{{{p.answer}}}.") and c.finish_reason == "stop"
