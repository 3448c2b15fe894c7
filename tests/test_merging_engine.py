"""The streaming engine: determinism across threads, sharding, reports, the two CLI forms."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from micota.io import sha256_path
from micota.manifest import is_complete
from micota.merging import MergeConfig, merge
from micota.merging.synth import make_pair
from micota.merging.tensorio import read_header


def test_default_mode_byte_identical_across_threads_sharded(tmp_path):
    base, (ft,) = make_pair(tmp_path / "m", hidden=64, intermediate=128, vocab=128, tie=False, dtype="bfloat16")
    outs = []
    for threads in (1, 2):
        cfg = MergeConfig.two_model(base, ft, weight=0.5, density=0.5, seed=7, out=tmp_path / f"t{threads}",
                                    threads=threads, shard_size="40KB")
        outs.append(merge(cfg))
    shards = sorted(p.name for p in outs[0].glob("*.safetensors"))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    for name in shards + ["model.safetensors.index.json"]:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    index = json.loads((outs[0] / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    # a different seed draws different masks
    other = merge(MergeConfig.two_model(base, ft, weight=0.5, density=0.5, seed=8, out=tmp_path / "s8", shard_size="40KB"))
    assert any((other / s).read_bytes() != (outs[0] / s).read_bytes() for s in shards)


def test_output_loads_in_transformers_and_report_is_complete(tmp_path):
    from transformers import AutoModelForCausalLM

    base, (ft,) = make_pair(tmp_path / "m", tie=True, dtype="float32")
    out = merge(MergeConfig.two_model(base, ft, weight=1.0, density=0.5, seed=0, out=tmp_path / "out"))
    assert is_complete(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"]["base"] == sha256_path(base) and manifest["inputs"]["model_0"] == sha256_path(ft)
    report = json.loads((out / "merge_report.json").read_text())
    assert report["method"] == "dare_ties" and report["seed"] == 0 and report["peak_rss_bytes"] > 0
    emb = report["tensors"]["model.embed_tokens.weight"]
    assert 0.4 < emb["kept_fraction"][0] < 0.6 and emb["delta_l1"][0] > 0
    assert set(report["inputs"]["base"]["files"]) >= {"config.json", "model.safetensors"}
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is True and "lm_head.weight" not in read_header(out / "model.safetensors")
    model = AutoModelForCausalLM.from_pretrained(out)
    merged = load_file(out / "model.safetensors")
    assert torch.equal(model.lm_head.weight, merged["model.embed_tokens.weight"])
    # DARE rescale is L1 matching: the merged task vector keeps ~ the fine-tune's L1 mass
    b, f = load_file(base / "model.safetensors"), load_file(ft / "model.safetensors")
    name = "model.layers.0.mlp.up_proj.weight"
    ratio = float((merged[name] - b[name]).abs().sum() / (f[name] - b[name]).abs().sum())
    assert abs(ratio - 1.0) < 0.02


def test_mixed_tied_and_untied_writes_untied_output(tmp_path):
    base, _ = make_pair(tmp_path / "a", tie=True, n_finetuned=0)
    _, (ft,) = make_pair(tmp_path / "b", tie=False)
    out = merge(MergeConfig.two_model(base, ft, method="task_arithmetic", weight=1.0, out=tmp_path / "out"))
    names = read_header(out / "model.safetensors")
    assert "lm_head.weight" in names
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False


def test_vocab_policies(tmp_path):
    base, (ft,) = make_pair(tmp_path / "m", vocab=96, ft_vocab=100, tie=True)
    cut = merge(MergeConfig.two_model(base, ft, method="task_arithmetic", out=tmp_path / "cut", embed_policy="truncate"))
    pad = merge(MergeConfig.two_model(base, ft, method="task_arithmetic", out=tmp_path / "pad", embed_policy="pad"))
    assert read_header(cut / "model.safetensors")["model.embed_tokens.weight"].shape == (96, 32)
    assert json.loads((cut / "config.json").read_text())["vocab_size"] == 96
    assert read_header(pad / "model.safetensors")["model.embed_tokens.weight"].shape == (100, 32)
    padded, f = load_file(pad / "model.safetensors"), load_file(ft / "model.safetensors")
    assert torch.equal(padded["model.embed_tokens.weight"][96:], f["model.embed_tokens.weight"][96:])


def test_mergekit_yaml_equals_two_model_cli(tmp_path, cli):
    base, (ft,) = make_pair(tmp_path / "m", dtype="bfloat16")
    cfg = tmp_path / "mk.yaml"
    cfg.write_text(f"merge_method: dare_ties\nbase_model: {base}\nmodels:\n  - model: {ft}\n"
                   f"    parameters:\n      weight: 0.5\n      density: 0.5\ndtype: bfloat16\ntokenizer_source: base\n")
    r1 = cli("merge", str(cfg), "--out", str(tmp_path / "from-yaml"), "--seed", "0")
    r2 = cli("merge", "--base", str(base), "--finetuned", str(ft), "--method", "dare_ties", "--weight", "0.5",
             "--density", "0.5", "--seed", "0", "--out", str(tmp_path / "from-flags"))
    assert r1.returncode == 0 and r2.returncode == 0, r1.stderr + r2.stderr
    assert r2.stdout.strip() == str(tmp_path / "from-flags")
    a, b = load_file(tmp_path / "from-yaml/model.safetensors"), load_file(tmp_path / "from-flags/model.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], load_file(base / "model.safetensors")[k]) for k in a)


def test_chunked_single_model_path_matches_whole_tensor_math(tmp_path, monkeypatch):
    """Torch engine: big tensors take the in-place, chunked path; force it on tiny tensors and compare."""
    from micota.merging import sparsify
    from micota.merging.engine import merge

    base, (ft,) = make_pair(tmp_path / "m", dtype="float32", tie=False)
    runs = {}
    for chunk in (1 << 22, 1000):
        monkeypatch.setattr(sparsify, "CHUNK", chunk)
        monkeypatch.setattr(sparsify, "_CHUNK", chunk)
        for method in ("ties", "task_arithmetic", "breadcrumbs", "dare_ties"):
            density = None if method == "task_arithmetic" else 0.4
            out = merge(MergeConfig.two_model(base, ft, method=method, weight=0.7, density=density,
                                              out=tmp_path / f"{method}-{chunk}"))
            runs[method, chunk] = load_file(out / "model.safetensors")
    for method in ("ties", "task_arithmetic", "breadcrumbs"):  # elementwise + exact selection: identical
        a, b = runs[method, 1 << 22], runs[method, 1000]
        assert all(torch.equal(a[k], b[k]) for k in a), method
    a, b = runs["dare_ties", 1 << 22], runs["dare_ties", 1000]  # same masks; rescale sums in float64
    assert all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-7) for k in a)
    assert any(not torch.equal(a[k], load_file(base / "model.safetensors")[k]) for k in a)


def test_streamed_big_tensors_equal_the_in_memory_path_and_hashes_are_one_pass(tmp_path, monkeypatch):
    """Tensors above STREAM_MIN are merged in two passes over blocks read from the (sharded) files:
    byte-identical to merging them in memory; the inputs' sha256 (computed from the merge's own reads)
    equal micota.io's."""
    from micota.io import sha256_file
    from micota.merging import engine, sparsify

    merge = engine.merge  # the torch engine (two-model merges otherwise take the fast path)

    base, (ft,) = make_pair(tmp_path / "m", dtype="bfloat16", tie=False, hidden=64, intermediate=128, vocab=128,
                            shard_size=20_000)
    assert len(list(base.glob("*.safetensors"))) > 3
    monkeypatch.setattr(sparsify, "CHUNK", 1000)
    monkeypatch.setattr(sparsify, "_CHUNK", 1000)
    outs = {}
    for stream_min in (2000, 10**12):  # streams every tensor above 2000 elements / none
        monkeypatch.setattr(engine, "STREAM_MIN", stream_min)
        for method, density in (("dare_ties", 0.4), ("task_arithmetic", None), ("dare_linear", 0.6)):
            out = merge(MergeConfig.two_model(base, ft, method=method, weight=0.7, density=density, seed=3,
                                              out=tmp_path / f"{method}-{stream_min}", threads=2))
            outs[method, stream_min] = out
    for method in ("dare_ties", "task_arithmetic", "dare_linear"):
        a, b = outs[method, 2000], outs[method, 10**12]
        assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes(), method
        ra, rb = (json.loads((x / "merge_report.json").read_text()) for x in (a, b))
        assert ra["tensors"] == rb["tensors"] and ra["task_vector"] == pytest.approx(rb["task_vector"], rel=1e-9)
        assert ra["tensors"]["model.embed_tokens.weight"]["delta_l1"][0] > 0
    files = json.loads((outs["dare_ties", 2000] / "merge_report.json").read_text())["inputs"]["model_0"]["files"]
    assert files and all(files[f] == sha256_file(ft / f) for f in files)
    manifest = json.loads((outs["dare_ties", 2000] / "manifest.json").read_text())
    assert manifest["inputs"] == {"base": sha256_path(base), "model_0": sha256_path(ft)}
