"""A generate output split into tasks of disjoint problems (``--tasks N``, Slurm array tasks):
the partition (disjoint, covering, stable), task-by-task runs equal the unsplit output row for row,
the output is finished only when every task is, and the readers see the union once."""

from __future__ import annotations

import json

import pytest

from micota.errors import UserError
from micota.filtering import read_samples
from micota.generation.runner import GenerateConfig, generate, load_samples
from micota.generation.split import finish_split, partition, task_dir, tasks_complete
from micota.manifest import is_complete, read_manifest
from micota.records import Problem, write_jsonl_atomic


def test_partition_is_disjoint_covering_balanced_and_stable():
    items = [f"q{i}" for i in range(10)]
    # hand-computed: item i -> task i mod 3
    assert partition(items, 3) == [["q0", "q3", "q6", "q9"], ["q1", "q4", "q7"], ["q2", "q5", "q8"]]
    for n in (1, 2, 3, 4, 7, 10):
        parts = partition(items, n)
        flat = [x for p in parts for x in p]
        assert sorted(flat) == sorted(items) and len(flat) == len(set(flat))  # covering, disjoint
        assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced
        assert partition(list(items), n) == parts  # a rerun assigns the same problems to the same task
        # --limit keeps each problem's index, hence its task
        assert all(set(p) <= set(q) for p, q in zip(partition(items[:6], n), parts))
    with pytest.raises(ValueError):
        partition(items, 0)


def _problems(path, k):
    write_jsonl_atomic(path, [Problem(id=f"q{i}", problem=f"What is {i} + {i * 2}?", answer=str(3 * i)) for i in range(k)])
    return path


def _rows(out):
    """Every raw row of the output's shards, its tasks' included (no deduplication)."""
    files = sorted(out.glob("samples-*.jsonl")) + sorted(out.glob("tasks/*/samples-*.jsonl"))
    return [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]


def test_tasks_run_one_by_one_give_the_unsplit_rows_and_finish_last(tmp_path, tiny_model_dir, cli):
    probs = _problems(tmp_path / "p.jsonl", 7)
    base = dict(model=str(tiny_model_dir), problems=str(probs), n=2, temperature=0.7, seed=3, max_new_tokens=5,
                batch_size=1)
    ref = generate(GenerateConfig(**base, out=tmp_path / "ref"))
    want = {(r["problem_id"], r["sample_idx"]): r for r in _rows(ref)}
    assert len(want) == 14

    out = tmp_path / "split"
    # task 1 of 3 through the CLI (what one Slurm array task runs): problems q1, q4 only; output unfinished
    r = cli("generate", str(tiny_model_dir), "--problems", str(probs), "--out", str(out), "--n", "2",
            "--temperature", "0.7", "--seed", "3", "--max-new-tokens", "5", "--batch-size", "1", "--tasks", "3", "--task", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted({row["problem_id"] for row in _rows(out)}) == ["q1", "q4"]
    assert tasks_complete(out, 3) == [False, True, False] and not is_complete(out)
    cfg = GenerateConfig(**base, out=out, tasks=3)
    with pytest.raises(UserError, match=r"task 0 of 3 has not finished \(2 unfinished"):
        finish_split(cfg)
    t1 = task_dir(out, 1, 3)
    stamp = (t1 / "manifest.json").stat().st_mtime_ns
    generate(cfg.model_copy(update={"task": 2}))
    generate(cfg)  # runs the one unfinished task (0), then finishes
    assert (t1 / "manifest.json").stat().st_mtime_ns == stamp  # a finished task is not rerun
    man = read_manifest(out)
    assert man["complete"] and man["counts"]["samples"] == 14 and man["counts"]["problems"] == 7 and man["tasks"] == 3
    rows = _rows(out)
    keys = [(r["problem_id"], r["sample_idx"]) for r in rows]
    assert sorted(keys) == sorted(want)  # every key exactly once over the tasks' shards
    # same completions, prompts and config hash as the unsplit run (the split shapes no completion)
    assert all(r == want[(r["problem_id"], r["sample_idx"])] for r in rows)
    assert {s.key for s in load_samples(out)} == set(want) and {s.key for s in read_samples(out)} == set(want)
    for k, ids in enumerate((["q0", "q3", "q6"], ["q1", "q4"], ["q2", "q5"])):
        got = {json.loads(line)["problem_id"] for f in task_dir(out, k, 3).glob("samples-*.jsonl")
               for line in f.read_text().splitlines()}
        assert sorted(got) == ids
    with pytest.raises(UserError, match="--task 3: not a task of --tasks 3"):
        generate(cfg.model_copy(update={"task": 3}))
    with pytest.raises(UserError, match=r"--tasks 8: more tasks than problems \(7\)"):
        generate(cfg.model_copy(update={"tasks": 8, "out": tmp_path / "x"}))
