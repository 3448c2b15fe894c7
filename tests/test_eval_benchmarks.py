"""Benchmark registry: local files, search order, offline hub error, problem files."""

from __future__ import annotations

import pytest

from micota.data.benchmarks import BENCHMARKS, BenchmarkSpec, load_benchmark, load_problems, register_benchmark
from micota.errors import UserError
from micota.records import Problem, write_jsonl_atomic

SIZES = {"gsm8k": 1319, "math500": 500, "aime24": 30, "aime25": 30, "amc23": 40, "olympiadbench": 675}


def test_every_benchmark_loads_from_the_data_dir_with_its_mode(data_dir):
    for name, size in SIZES.items():
        probs = load_benchmark(name, data_dir=data_dir)
        assert len(probs) == size and len({p.id for p in probs}) == size
        assert all(p.source == name and p.answer for p in probs)
    assert {n: BENCHMARKS[n].grade_mode for n in SIZES} == {**{n: "default" for n in SIZES}, "gsm8k": "gsm8k"}
    assert [p.id for p in load_benchmark("aime24", data_dir=data_dir, limit=2)] == ["aime24-60", "aime24-61"]


def test_env_var_wins_over_the_repo_fallback(tmp_path, monkeypatch):
    write_jsonl_atomic(tmp_path / "amc23.jsonl", [Problem(id="x1", problem="1+1?", answer="2")])
    monkeypatch.setenv("MICOTA_DATA_DIR", str(tmp_path))
    assert [p.id for p in load_benchmark("amc23")] == ["x1"]
    monkeypatch.delenv("MICOTA_DATA_DIR")
    assert len(load_benchmark("amc23")) == 40  # ../shared/data/benchmarks beside the repo


def test_missing_offline_unknown_and_problem_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    register_benchmark(BenchmarkSpec("ghost", "ghost.jsonl", "nobody/ghost", "test"))
    try:
        with pytest.raises(UserError, match=r"ghost.jsonl not found in .*MICOTA_DATA_DIR.*offline"):
            load_benchmark("ghost", data_dir=tmp_path)
    finally:
        BENCHMARKS.pop("ghost")
    with pytest.raises(UserError, match=r"unknown benchmark 'aime99' \(known: gsm8k, math500"):
        load_problems("aime99")
    f = tmp_path / "mine.jsonl"
    write_jsonl_atomic(f, [Problem(id=f"m{i}", problem="q", answer=str(i)) for i in range(5)])
    probs = load_problems(str(f), limit=3)
    assert [p.id for p in probs] == ["m0", "m1", "m2"] and probs[0].source == "mine"
    write_jsonl_atomic(f, [Problem(id="a", problem="q", answer="1")] * 2)
    with pytest.raises(UserError, match="duplicate problem id 'a'"):
        load_problems(str(f))
