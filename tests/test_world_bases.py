"""The System-1 bases shipped with micota are what their recorded config builds.

For each demo recipe's world: the world the recipe builds hashes to a shipped set of bases
(pretrain_bases would reuse it); rebuilding the student from the recorded config for its first
steps reproduces the recorded loss curve; and each shipped base, evaluated again, reproduces its
recorded accuracy. A pipeline's pretrain stage copies the shipped set instead of training.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from micota.data.world import PretrainConfig, WorldConfig, build_world, load_world
from micota.data.world.pretrain import SHIPPED, bases_key, find_bases, measure_accuracy

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
REBUILD_STEPS = 25  # the pretraining log has points at steps 1 and 25


def _recipe_world(tmp_path: Path, recipe: str) -> Path:
    spec = yaml.safe_load((RECIPES / recipe).read_text())
    cfg = {k: v for k, v in spec["stages"]["world"].items() if k != "kind"}
    cfg["seed"] = spec["vars"]["seed"] if str(cfg.get("seed", "")).startswith("${") else cfg.get("seed", 0)
    return build_world(WorldConfig(**cfg, out=tmp_path / recipe.replace(".yaml", "")))


@pytest.fixture(scope="module", params=["miniature.yaml", "miniature-quick.yaml"])
def shipped(request, tmp_path_factory):
    world = _recipe_world(tmp_path_factory.mktemp("bases"), request.param)
    cfg = PretrainConfig(world=str(world), out=str(world.parent / "bases"))
    found = find_bases(bases_key(cfg, load_world(world)))
    assert found is not None and found.parent == SHIPPED, f"{request.param}: no shipped bases for its world (key {bases_key(cfg, load_world(world))})"
    return world, found


def test_rebuilding_the_student_reproduces_its_recorded_loss_curve(shipped, tmp_path):
    from micota.training import TrainConfig, train

    world, found = shipped
    recorded = json.loads((found / "student" / "manifest.json").read_text())["config"]
    cfg = TrainConfig(**{**recorded, "data": str(world / "pretrain"), "tokenizer": str(world / "tokenizer"),
                         "from_config": str(world / "configs" / "student.json"), "out": str(tmp_path / "student"),
                         "stop_after_steps": REBUILD_STEPS, "resume": False, "save_checkpoints": False})
    train(cfg)
    mine = {p["step"]: p["loss"] for p in json.loads((tmp_path / "student" / "train_report.json").read_text())["loss_curve"]}
    theirs = {p["step"]: p["loss"] for p in json.loads((found / "student" / "train_report.json").read_text())["loss_curve"]}
    common = sorted(s for s in mine if s in theirs and s <= REBUILD_STEPS)
    assert len(common) >= 2, (mine, theirs)
    for s in common:  # thread counts change float sums: equal to a few percent, not bit for bit
        assert mine[s] == pytest.approx(theirs[s], rel=0.05), (s, mine[s], theirs[s])


@pytest.mark.parametrize("role", ["student", "ta"])
def test_the_shipped_bases_reproduce_their_recorded_accuracy(shipped, role, tmp_path):
    world, found = shipped
    rep = json.loads((found / "pretrain_report.json").read_text())
    rec = rep["models"][role]["accuracy_test"]
    cfg = json.loads((found / "manifest.json").read_text())["config"]
    got = measure_accuracy(found / role, world / "problems" / "test.jsonl", tmp_path / "eval",
                           limit=cfg["eval_limit"], max_new_tokens=cfg["max_new_tokens"])
    assert got["n"] == rec["n"]
    assert got["accuracy"] == pytest.approx(rec["accuracy"], abs=0.05)
    assert got["mean_completion_tokens"] == pytest.approx(rec["mean_completion_tokens"], rel=0.1)


def test_the_pipeline_pretrain_stage_copies_the_shipped_set(shipped, tmp_path):
    from micota.data.world import pretrain_bases

    world, found = shipped
    out = pretrain_bases(PretrainConfig(world=str(world), out=str(tmp_path / "b")))
    man = json.loads((out / "manifest.json").read_text())
    assert man["complete"] and man["reused_from"] == str(found)
    assert (out / "student" / "model.safetensors").read_bytes() == (found / "student" / "model.safetensors").read_bytes()
