"""The shipped recipes validate offline (`micota run --dry-run`), and launchers build the right argv."""

from __future__ import annotations

from pathlib import Path

import pytest

from micota.pipeline.runner import launcher_command
from micota.pipeline.schema import LauncherSpec

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("variant", ["", "-server"])
@pytest.mark.parametrize("size", ["1.5b", "3b", "7b"])
def test_paper_recipe_dry_run_validates_offline(size, variant, cli, tmp_path):
    """Every stage config validates and every input exists (paths relative to the recipe, run from
    elsewhere); what this machine lacks is the GPU extras, which the dry run names."""
    import importlib.util

    r = cli("run", str(REPO / f"recipes/paper/qwen2.5-{size}{variant}.yaml"), "--dry-run", "--out", str(tmp_path / "o"),
            cwd=tmp_path)
    lacking = [m for m in ("vllm", "deepspeed") if importlib.util.find_spec(m) is None]
    if lacking:
        assert r.returncode == 2 and r.stderr.strip().startswith("error: missing optional extras: "), r.stderr
        assert "student_sft.mid" in r.stderr and "not found" not in r.stderr
    else:
        assert r.returncode == 0, r.stderr
        for stage in ("teacher_gen", "ta_sft", "merge", "mid_gen", "student_sft.mid", "student_eval.long", "bpc.mid", "report"):
            assert f"\n{stage} " in r.stdout
    assert f"Qwen/Qwen2.5-{size.upper().replace('B', 'B')}-Instruct" in (REPO / f"recipes/paper/qwen2.5-{size}.yaml").read_text()
    assert not (tmp_path / "o").exists()  # a dry run writes nothing
    if variant:  # the server-backed variant differs only in how the teacher and short CoT are generated
        import yaml

        plain = yaml.safe_load((REPO / f"recipes/paper/qwen2.5-{size}.yaml").read_text())
        served = yaml.safe_load((REPO / f"recipes/paper/qwen2.5-{size}-server.yaml").read_text())
        for name in ("teacher_gen", "short_gen"):
            st = served["stages"][name]
            assert st.pop("backend") == "openai" and st.pop("server_url")[0].startswith("http://") and st.pop("concurrency")
            assert st.pop("resources")["gpus_per_node"] == 0  # the server holds the GPUs, not the stage
            assert st == {k: v for k, v in plain["stages"][name].items() if k not in ("backend", "tensor_parallel_size", "resources")}
        assert {k: v for k, v in served["stages"].items() if k not in ("teacher_gen", "short_gen")} == \
            {k: v for k, v in plain["stages"].items() if k not in ("teacher_gen", "short_gen")}


@pytest.mark.parametrize("size", ["1.5b", "3b", "7b"])
def test_paper_recipes_sample_r1_models_as_recommended_and_decontaminate_first(size):
    import yaml

    st = yaml.safe_load((REPO / f"recipes/paper/qwen2.5-{size}.yaml").read_text())["stages"]
    for name in ("teacher_gen", "ta_long_gen", "mid_gen"):  # the R1-Distill teacher and the TA trained on its traces
        assert (st[name]["temperature"], st[name]["top_p"]) == (0.6, 0.95), name
        assert st[name]["inputs"]["problems"] == "${train_problems}"
    assert st["train_problems"]["kind"] == "decontaminate" and st["train_problems"]["ngram"] == 8
    assert set(st["train_problems"]["against"]) >= {"aime24", "amc23", "olympiadbench", "math500", "gsm8k"}


def test_launcher_commands(tmp_path):
    cfg = tmp_path / "c.json"
    acc = launcher_command(LauncherSpec(type="accelerate", config_file="z3.yaml", num_processes=8), "train", cfg)
    assert acc[1:3] == ["-m", "accelerate.commands.launch"] and "--config_file" in acc and "8" in acc
    assert acc[-4:] == ["-m", "micota.pipeline.exec", "train", str(cfg)]
    tr = launcher_command(LauncherSpec(type="torchrun", num_processes=2), "train", cfg)
    assert "--nproc_per_node=2" in tr and tr[-3:] == ["micota.pipeline.exec", "train", str(cfg)]
