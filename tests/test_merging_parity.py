"""Parity with mergekit 0.1.5 (run in-process, -j 1) on tiny random Qwen2 and Llama pairs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from micota.merging import MergeConfig, from_mergekit_yaml, merge
from micota.merging.synth import make_pair

CASES = [  # arch, dtype, tied, number of fine-tunes
    ("qwen2", "bfloat16", True, 2),
    ("llama", "float32", False, 1),
    ("qwen2", "float32", False, 2),
    ("llama", "bfloat16", True, 1),
]
PARAMS = {
    "linear": "weight: 0.3", "task_arithmetic": "weight: 0.3", "ties": "weight: 0.7, density: 0.4",
    "breadcrumbs": "weight: 0.7, density: 0.6, gamma: 0.05", "breadcrumbs_ties": "weight: 0.7, density: 0.6",
    "dare_ties": "weight: 0.6, density: 0.5", "dare_linear": "weight: 0.6, density: 0.3",
    "della": "weight: 0.6, density: 0.5, epsilon: 0.1", "della_linear": "weight: 0.5, density: 0.5",
}
DETERMINISTIC = {"linear", "task_arithmetic"}  # no selection ties, no randomness: default mode == mergekit
FAST = {"task_arithmetic", "ties", "dare_ties", "dare_linear"}  # one fine-tune: micota.merging.fast


def run_mergekit(cfg_text: str, out: Path, seed: int) -> None:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    prev = torch.get_num_threads()
    torch.set_num_threads(1)  # == mergekit-yaml -j 1
    try:
        run_merge(MergeConfiguration.model_validate(yaml.safe_load(cfg_text)), str(out),
                  MergeOptions(random_seed=seed, quiet=True, write_model_card=False, copy_tokenizer=False))
    finally:
        torch.set_num_threads(prev)


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def assert_bytes_equal(a: dict, b: dict, what: str) -> None:
    assert set(a) == set(b), f"{what}: tensor names differ: {set(a) ^ set(b)}"
    bad = [k for k in a if a[k].dtype != b[k].dtype or a[k].shape != b[k].shape
           or a[k].contiguous().view(-1).view(torch.uint8).tolist() != b[k].contiguous().view(-1).view(torch.uint8).tolist()]
    assert not bad, f"{what}: {len(bad)} tensors differ, e.g. {bad[0]}"


def yaml_for(method: str, base: Path, fts: list[Path], dtype: str) -> str:
    if method == "slerp":
        return f"merge_method: slerp\nbase_model: {base}\nmodels:\n  - model: {base}\n  - model: {fts[0]}\nparameters: {{t: 0.3}}\n"
    text = f"merge_method: {method}\nbase_model: {base}\nmodels:\n"
    text += "".join(f"  - model: {f}\n    parameters: {{{PARAMS[method]}}}\n" for f in fts)
    text += f"dtype: {dtype}\n"
    if method == "linear":
        text += "parameters: {weight: 0.5}\n"  # the base is an input of linear and needs a weight
    return text


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-{'tied' if c[2] else 'untied'}-{c[3]}ft")
def test_byte_identical_to_mergekit(tmp_path, case):
    arch, dtype, tied, n_ft = case
    base, fts = make_pair(tmp_path / "m", arch=arch, dtype=dtype, tie=tied, n_finetuned=n_ft)
    for method in [*PARAMS, "slerp"]:
        cfg = tmp_path / f"{method}.yaml"
        cfg.write_text(yaml_for(method, base, fts, dtype))
        run_mergekit(cfg.read_text(), tmp_path / f"mk-{method}", seed=3)
        ref = tensors(tmp_path / f"mk-{method}")
        assert ("lm_head.weight" in ref) == (not tied)
        ours = merge(from_mergekit_yaml(cfg, out=str(tmp_path / f"mc-{method}"), seed=3, mergekit_compatible=True))
        assert_bytes_equal(tensors(ours), ref, f"{method} --mergekit-compatible")
        written = json_load(ours / "config.json")
        assert written["tie_word_embeddings"] == tied
        fast = n_ft == 1 and method in FAST
        if (method in DETERMINISTIC and not (fast and dtype == "bfloat16")
                or dtype == "float32" and method in {"ties", "breadcrumbs", "breadcrumbs_ties"}):
            # default mode: same result (fp32 deltas have no equal magnitudes at the top-k threshold; the
            # fast path's float32 sequence is the torch engine's)
            ours = merge(from_mergekit_yaml(cfg, out=str(tmp_path / f"df-{method}"), seed=3))
            assert_bytes_equal(tensors(ours), ref, f"{method} default mode")
        elif method == "task_arithmetic":
            # bf16, one fine-tune: the fast path computes in float32 and rounds once (mergekit rounds every
            # step to bf16) — equal to torch's float32 b + w·(f − b) rounded to bf16, and within a few bf16
            # steps of mergekit's
            ours = tensors(merge(from_mergekit_yaml(cfg, out=str(tmp_path / f"df-{method}"), seed=3)))
            b, f = tensors(base), tensors(fts[0])
            want = {k: (b[k].float() + (f[k].float() - b[k].float()) * 0.3).to(torch.bfloat16) for k in b}
            assert_bytes_equal(ours, want, "bf16 task_arithmetic default mode vs float32 reference")
            for k in ours:
                scale = torch.maximum(torch.maximum(ref[k].float().abs(), b[k].float().abs()), f[k].float().abs())
                step = scale.clamp_min(1e-30) * 2 ** -6  # mergekit rounds δ, w·δ and b + w·δ to bf16
                assert bool(((ours[k].float() - ref[k].float()).abs() <= step).all()), k


def json_load(p: Path) -> dict:
    import json

    return json.loads(p.read_text())


def test_default_mode_ties_keeps_same_count_as_mergekit_in_bf16(tmp_path):
    """bf16 |δ| often ties at the top-k threshold: the default mode breaks ties by index (mergekit by an
    unstable argsort), so it may keep different tied entries — but always the same number."""
    base, (ft,) = make_pair(tmp_path / "m", dtype="bfloat16")
    cfg = tmp_path / "ties.yaml"
    cfg.write_text(yaml_for("ties", base, [ft], "bfloat16").replace("weight: 0.7", "weight: 1.0"))
    run_mergekit(cfg.read_text(), tmp_path / "mk", seed=0)
    ref, ours = tensors(tmp_path / "mk"), tensors(merge(from_mergekit_yaml(cfg, out=str(tmp_path / "ours"))))
    b = tensors(base)
    for name in b:
        assert int((ours[name] != b[name]).sum()) <= int(0.4 * b[name].numel()) + 1
        kept_ref, kept_ours = (ref[name] != b[name]).sum(), (ours[name] != b[name]).sum()
        assert abs(int(kept_ref) - int(kept_ours)) <= 0, name


TWO_MODEL_YAML = {  # the mergekit YAML a user would write for "the fine-tune's share is w"
    "linear": "merge_method: linear\nbase_model: {b}\nmodels:\n  - model: {b}\n    parameters: {{weight: {wb}}}\n"
              "  - model: {f}\n    parameters: {{weight: {w}}}\ndtype: {dt}\n",
    "slerp": "merge_method: slerp\nbase_model: {b}\nmodels:\n  - model: {b}\n  - model: {f}\nparameters: {{t: {w}}}\n",
    "task_arithmetic": "merge_method: task_arithmetic\nbase_model: {b}\nmodels:\n  - model: {f}\n"
                       "    parameters: {{weight: {w}}}\ndtype: {dt}\n",
}


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_two_model_weight_is_the_finetunes_share_as_in_mergekit_yaml(tmp_path, cli, dtype):
    """``micota merge --base B --finetuned F --method M --weight w`` == the equivalent mergekit YAML."""
    base, (ft,) = make_pair(tmp_path / "m", dtype=dtype, tie=False)
    b, f = tensors(base), tensors(ft)
    w = 0.3
    for method, text in TWO_MODEL_YAML.items():
        (tmp_path / f"{method}.yaml").write_text(text.format(b=base, f=ft, w=w, wb=round(1 - w, 10), dt=dtype))
        run_mergekit((tmp_path / f"{method}.yaml").read_text(), tmp_path / f"mk-{method}", seed=0)
        r = cli("merge", "--base", str(base), "--finetuned", str(ft), "--method", method, "--weight", str(w),
                str(tmp_path / f"ours-{method}"))
        assert r.returncode == 0, r.stderr
        ours = tensors(tmp_path / f"ours-{method}")
        if method == "task_arithmetic" and dtype == "bfloat16":
            # default mode (fast path): float32 math rounded once == torch's float32 reference; the mergekit
            # YAML's bf16 step-by-step rounding is what --mergekit-compatible reproduces
            want = {k: (b[k].float() + (f[k].float() - b[k].float()) * w).to(torch.bfloat16) for k in b}
            assert_bytes_equal(ours, want, "two-model task_arithmetic, bf16 default mode")
            r = cli("merge", "--base", str(base), "--finetuned", str(ft), "--method", method, "--weight", str(w),
                    "--mergekit-compatible", "--out", str(tmp_path / f"ours-{method}-mk"))
            assert r.returncode == 0, r.stderr
            ours = tensors(tmp_path / f"ours-{method}-mk")
        assert_bytes_equal(ours, tensors(tmp_path / f"mk-{method}"), f"two-model {method}")
        # and what a user means by it, checked by hand: 30% of the way from the base to the fine-tune
        name = "model.layers.0.mlp.up_proj.weight"
        x, y = b[name].double(), f[name].double()
        expect = (1 - w) * x + w * y
        if method == "slerp":  # along the great circle: sin((1−t)θ)/sin θ·b + sin(tθ)/sin θ·f
            theta = torch.acos((x / x.norm() * y / y.norm()).sum())
            expect = (torch.sin((1 - w) * theta) * x + torch.sin(w * theta) * y) / torch.sin(theta)
        rtol, atol = (2e-2, 2e-4) if dtype == "bfloat16" else (1e-5, 1e-7)  # bf16: δ and the output are rounded
        assert torch.allclose(ours[name].double(), expect, rtol=rtol, atol=atol), method
    # the end points are the inputs themselves
    for w_end, ref in ((0.0, b), (1.0, f)):
        out = merge(MergeConfig.two_model(base, ft, method="linear", weight=w_end, out=tmp_path / f"end{w_end}"))
        assert_bytes_equal(tensors(out), ref, f"linear w={w_end}")


def test_two_model_linear_rejects_density_and_missing_weight(tmp_path):
    from micota.errors import UserError

    base, (ft,) = make_pair(tmp_path / "m")
    with pytest.raises(UserError, match="density"):
        MergeConfig.two_model(base, ft, method="linear", weight=0.5, density=0.5)
    with pytest.raises(UserError, match="weight is required"):
        MergeConfig.two_model(base, ft, method="slerp", weight=None)
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        MergeConfig.two_model(base, ft, method="linear", weight=1.5)


def test_report_task_vector_norms_match_a_hand_computation(tmp_path):
    """merge_report.json's task_vector: ‖θ_base‖₂ and ‖θ_ft − θ_base‖₂ over every floating tensor, before
    sparsification and weighting (so the same for every method and weight)."""
    import math

    base, (ft,) = make_pair(tmp_path / "m", dtype="bfloat16", tie=True, noise=0.01)
    b, f = tensors(base), tensors(ft)
    bn = math.sqrt(sum(float((v.double() ** 2).sum()) for v in b.values()))
    dn = math.sqrt(sum(float(((f[k].double() - v.double()) ** 2).sum()) for k, v in b.items()))
    for method, kw in (("dare_ties", {"weight": 0.5, "density": 0.3}), ("linear", {"weight": 0.2}), ("ties", {"weight": 1.0, "density": 0.8})):
        out = merge(MergeConfig.two_model(base, ft, method=method, out=tmp_path / method, **kw))
        tv = json_load(out / "merge_report.json")["task_vector"]
        assert tv["base_norm"] == pytest.approx(bn, rel=1e-6) and tv["delta_norm"] == pytest.approx(dn, rel=1e-6)
        assert tv["relative"] == pytest.approx(dn / bn, rel=1e-6) and 0.1 < tv["relative"] < 1
        assert all("_task_vector_sq" not in s for s in json_load(out / "merge_report.json")["tensors"].values())


def test_mergekit_compatible_on_sharded_inputs_with_tensors_larger_than_a_chunk(tmp_path, monkeypatch):
    """Byte-identity with mergekit also when tensors exceed the engine's chunk (the embedding here has
    8.96M elements > 2 chunks of 4M, so the default mode streams it) and the inputs come in shards; and
    again with the chunk lowered to 1000 elements, so that every tensor but the norms and biases exceeds it."""
    from micota.merging import sparsify

    base, (ft,) = make_pair(tmp_path / "m", dtype="bfloat16", tie=True, hidden=64, intermediate=128, vocab=140_000,
                            shard_size=6_000_000)
    assert len(list(base.glob("*.safetensors"))) >= 2 and (base / "model.safetensors.index.json").is_file()
    assert 140_000 * 64 > 2 * sparsify.CHUNK
    for method in ("dare_ties", "ties", "task_arithmetic"):
        cfg = tmp_path / f"{method}.yaml"
        cfg.write_text(yaml_for(method, base, [ft], "bfloat16"))
        run_mergekit(cfg.read_text(), tmp_path / f"mk-{method}", seed=5)
        ours = merge(from_mergekit_yaml(cfg, out=str(tmp_path / f"mc-{method}"), seed=5, mergekit_compatible=True))
        assert_bytes_equal(tensors(ours), tensors(tmp_path / f"mk-{method}"), f"{method} --mergekit-compatible, sharded, big")
    with monkeypatch.context() as m:
        m.setattr(sparsify, "CHUNK", 1000)
        m.setattr(sparsify, "_CHUNK", 1000)
        for method in ("dare_ties", "ties", "task_arithmetic"):
            ours = merge(from_mergekit_yaml(tmp_path / f"{method}.yaml", out=str(tmp_path / f"mc1000-{method}"), seed=5,
                                            mergekit_compatible=True))
            assert_bytes_equal(tensors(ours), tensors(tmp_path / f"mk-{method}"), f"{method} --mergekit-compatible, chunk 1000")
    from micota.merging.engine import merge as torch_merge

    ours = tensors(torch_merge(from_mergekit_yaml(tmp_path / "task_arithmetic.yaml", out=str(tmp_path / "df"))))
    assert_bytes_equal(ours, tensors(tmp_path / "mk-task_arithmetic"), "task_arithmetic torch engine (embedding streamed)")
    # the fast path on the same sharded pair: float32 math rounded once, == torch's float32 reference
    fast = tensors(merge(from_mergekit_yaml(tmp_path / "task_arithmetic.yaml", out=str(tmp_path / "fast"))))
    b, f = tensors(base), tensors(ft)
    w = float(PARAMS["task_arithmetic"].split(":")[1])
    assert_bytes_equal(fast, {k: (b[k].float() + (f[k].float() - b[k].float()) * w).to(torch.bfloat16) for k in b},
                       "task_arithmetic fast path, sharded, big")
