"""The torch-free fast path (micota.merging.fast): every method against a second implementation (torch,
float64), streamed == held, which merges take it, no torch import, golden output digests. The kernel
itself is compared with numpy bit for bit in test_merging_kernel.py."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from micota.merging import MergeConfig, merge
from micota.merging import fast
from micota.merging.synth import make_pair
from merge_reference import keep_mask


def _tensors(folder):
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def test_methods_table_matches_the_registry():
    from micota.merging.methods import METHODS

    for name, (sparsifier, consensus, normalize, rescale) in fast.METHODS.items():
        spec = METHODS[name]
        assert (spec.shared["normalize"], spec.shared["rescale"]) == (normalize, rescale), name
        if spec.stream is not None:
            assert spec.stream == (sparsifier, consensus), name
    assert METHODS["ties"].fn.__doc__.startswith("TIES: trim") and fast.METHODS["ties"][:2] == ("magnitude", True)


def _reference(method, b32, f32, w, density, seed, name, n):
    """A second implementation (torch, float64 for the sums) of the fast path's formula."""
    d = f32 - b32
    flat = d.reshape(-1).clone()
    if method in ("dare_ties", "dare_linear"):
        keep = np.concatenate([keep_mask(fast.tensor_seed(seed, name, 0), j, min(fast.BLOCK, n - s), density)
                               for j, s in enumerate(range(0, n, fast.BLOCK))])
        sparse = flat * torch.from_numpy(keep)
        before, after = float(flat.double().abs().sum()), float(sparse.double().abs().sum())
        out = sparse * (before / after) * w if after >= 1e-7 else sparse * w
        return (b32.reshape(-1).double() + out.double()).reshape(b32.shape), keep.mean()
    if method == "ties":
        k = max(1, int(density * n))
        order = torch.sort(flat.abs(), descending=True, stable=True).indices[:k]  # ties: lowest index first
        sparse = torch.zeros_like(flat)
        sparse[order] = flat[order]
        return (b32.reshape(-1).double() + sparse.double()).reshape(b32.shape), k / n  # normalize: w cancels
    return b32.double() + w * d.double(), 1.0


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_every_fast_method_matches_a_reference_computation(tmp_path, dtype, monkeypatch):
    monkeypatch.setattr(fast, "BLOCK", 1000)  # several blocks per tensor (masks are drawn per block)
    base, (ft,) = make_pair(tmp_path / "m", dtype=dtype, tie=False, hidden=64, intermediate=128, vocab=128)
    b, f = _tensors(base), _tensors(ft)
    for method, density in (("task_arithmetic", None), ("ties", 0.3), ("dare_ties", 0.6), ("dare_linear", 0.4)):
        out = merge(MergeConfig.two_model(base, ft, method=method, weight=0.7, density=density, seed=11,
                                          out=tmp_path / method))
        report = json.loads((out / "merge_report.json").read_text())
        assert report["engine"] == "fast"
        got = _tensors(out)
        for name in b:
            n = b[name].numel()
            want, kept = _reference(method, b[name].float(), f[name].float(), 0.7, density, 11, name, n)
            assert report["tensors"][name]["kept_fraction"][0] == pytest.approx(kept, abs=1e-6), (method, name)
            if dtype == "float32":
                assert torch.allclose(got[name].double(), want, rtol=1e-6, atol=1e-7), (method, name)
            else:  # one rounding of the exact value: within half a bf16 step (a hair more for the rescale sum)
                step = want.abs().clamp_min(1e-30) * 2.0 ** -8
                err = (got[name].double() - want).abs()
                assert bool((err <= step * 1.01).all()), (method, name, float((err / step).max()))
        if method == "dare_ties":
            assert 0.55 < report["tensors"]["model.embed_tokens.weight"]["kept_fraction"][0] < 0.65


def test_streamed_equals_held_on_sharded_inputs_and_hashes_are_one_pass(tmp_path, monkeypatch):
    """Tensors above HOLD are re-read from the (sharded) files per pass: byte-identical to holding them;
    the inputs' sha256 (from the merge's own reads) equal micota.io's."""
    from micota.io import sha256_file, sha256_path

    monkeypatch.setattr(fast, "BLOCK", 1000)
    base, (ft,) = make_pair(tmp_path / "m", dtype="bfloat16", tie=False, hidden=64, intermediate=128, vocab=128,
                            shard_size=20_000)
    assert len(list(base.glob("*.safetensors"))) > 3
    outs = {}
    for hold in (0, 10**12):
        monkeypatch.setattr(fast, "HOLD", hold)
        for method, density in (("dare_ties", 0.4), ("ties", 0.5), ("task_arithmetic", None)):
            outs[method, hold] = merge(MergeConfig.two_model(base, ft, method=method, weight=0.7, density=density,
                                                             seed=3, out=tmp_path / f"{method}-{hold}", threads=2))
    for method in ("dare_ties", "ties", "task_arithmetic"):
        a, b = outs[method, 0], outs[method, 10**12]
        assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes(), method
        ra, rb = (json.loads((x / "merge_report.json").read_text()) for x in (a, b))
        assert ra["tensors"] == rb["tensors"] and ra["task_vector"] == pytest.approx(rb["task_vector"], rel=1e-9)
    files = json.loads((outs["dare_ties", 0] / "merge_report.json").read_text())["inputs"]["model_0"]["files"]
    assert files and all(files[f] == sha256_file(ft / f) for f in files)
    manifest = json.loads((outs["dare_ties", 0] / "manifest.json").read_text())
    assert manifest["inputs"] == {"base": sha256_path(base), "model_0": sha256_path(ft)}


def _tied_ties_tensor(tmp_path, monkeypatch, seed: int):
    """A TIES tensor (density 0.37) over 20,000 |δ| with many ties (bf16-like steps), base 0, small blocks."""
    monkeypatch.setattr(fast, "BLOCK", 997)
    n = 20_000
    d = (np.random.default_rng(seed).integers(-3, 4, n) * 0.25).astype(np.float32)
    b = np.zeros(n, np.float32)
    info = fast.RawInfo("x", tmp_path, "F32", (n,), 0, 4 * n)
    t = fast.FastTensor("x", info, info, n, "F32", {"weight": 1.0, "density": 0.37},
                        {"normalize": True, "rescale": False, "lambda": 1.0})
    return t, d, b, n


def test_top_k_selection_is_exact_with_ties_and_a_missed_bracket(tmp_path, monkeypatch):
    """Many equal |δ| at the threshold (bf16 steps) and a sample that brackets the wrong place: still
    exactly k kept, the lowest-index ones among the equal."""
    t, d, b, n = _tied_ties_tensor(tmp_path, monkeypatch, 1)
    src = fast._Source(t, (b.view(np.uint32), d.view(np.uint32)))
    k = int(0.37 * n)
    for sample in (np.abs(d).view(np.uint32).copy(), np.zeros(10, np.uint32), np.full(10, 0x7F000000, np.uint32)):
        thr, r = fast._topk_threshold(src, n, k, fast._bracket(sample, n, k))
        keys = np.abs(d).view(np.uint32)
        assert int((keys > thr).sum()) + r == k and 0 < r <= int((keys == thr).sum())
    out = []
    fast.merge_tensor(t, 0, "ties", src, lambda s, blk: out.append(blk.copy()))
    got = np.concatenate(out)
    order = np.argsort(-np.abs(d), kind="stable")[:k]
    want = np.zeros(n, np.float32)
    want[order] = d[order]
    assert np.array_equal(got, want)


def test_which_merges_take_the_fast_path(tmp_path):
    base, (ft,) = make_pair(tmp_path / "m", dtype="bfloat16")
    _, (ft2, ft3) = make_pair(tmp_path / "m2", dtype="bfloat16", n_finetuned=2)
    two = dict(weight=0.5, density=0.5)
    cases = {
        "fast": MergeConfig.two_model(base, ft, method="dare_ties", **two),
        "compat": MergeConfig.two_model(base, ft, method="dare_ties", mergekit_compatible=True, **two),
        "breadcrumbs": MergeConfig.two_model(base, ft, method="breadcrumbs", **two),
        "linear": MergeConfig.two_model(base, ft, method="linear", weight=0.5),
        "fp16": MergeConfig.two_model(base, ft, method="ties", dtype="float16", **two),
    }
    assert fast.plan_fast(cases["fast"]) is not None
    # mergekit filter lists resolve per tensor on the fast path too
    plan = fast.plan_fast(MergeConfig.two_model(base, ft, method="ties", density=0.5,
                                                weight=[{"filter": "mlp", "value": 0.2}, {"value": 1.0}]))
    weights = {t.name: t.p["weight"] for t in plan.tensors}
    assert weights["model.layers.0.mlp.up_proj.weight"] == 0.2 and weights["model.embed_tokens.weight"] == 1.0
    for name, cfg in cases.items():
        if name != "fast":
            assert fast.plan_fast(cfg) is None, name
    cfg = MergeConfig.build({"method": "dare_ties", "base": str(tmp_path / "m2" / "base"),
                             "models": [{"model": str(ft2), "parameters": two}, {"model": str(ft3), "parameters": two}]})
    assert fast.plan_fast(cfg) is None  # two fine-tunes: the torch engine


def test_the_fast_path_imports_no_torch(tmp_path):
    base, (ft,) = make_pair(tmp_path / "m", dtype="bfloat16")
    code = ("import sys; from micota.merging import MergeConfig, merge; "
            f"merge(MergeConfig.two_model({str(base)!r}, {str(ft)!r}, method='ties', weight=1.0, density=0.5, "
            f"out={str(tmp_path / 'out')!r})); print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "micota", "merge", "--base", str(base), "--finetuned",
                        str(ft), "--weight", "0.5", "--density", "0.5", "--out", str(tmp_path / "cli")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "numpy" in imported and "torch" not in imported and "transformers" not in imported


@pytest.mark.parametrize("method,portable", [("task_arithmetic", False), ("dare_ties", False), ("dare_ties", True)])
def test_nan_in_an_input_is_one_clear_error(tmp_path, method, portable):
    """Also for DARE, whose masks drop about half of the 16 infinite deltas: dropped (inf·0 = NaN) or
    kept, the output is not finite — on the vector path and on the portable loop."""
    from safetensors.torch import save_file

    from micota.errors import UserError
    from micota.merging import kernel

    base, (ft,) = make_pair(tmp_path / "m", dtype="float32")
    t = _tensors(ft)
    name = "model.layers.0.mlp.up_proj.weight"
    t[name][0, :16] = float("inf")
    save_file(t, str(ft / "model.safetensors"), metadata={"format": "pt"})
    kernel.lib().mk_portable(int(portable))
    try:
        with pytest.raises(UserError, match=f"merged tensor {name} has NaN/Inf"):
            merge(MergeConfig.two_model(base, ft, method=method, weight=0.5, density=0.5 if method != "task_arithmetic"
                                        else None, out=tmp_path / "out"))
    finally:
        kernel.lib().mk_portable(0)
    assert not (tmp_path / "out").exists()
    if not portable:  # the command line: one line, exit 2 (no numpy warning from the NaN rescale factor)
        r = subprocess.run([sys.executable, "-m", "micota", "merge", "--base", str(base), "--finetuned", str(ft),
                            "--method", method, "--weight", "0.5", *(["--density", "0.5"] if method != "task_arithmetic"
                                                                    else []), "--out", str(tmp_path / "cli")],
                           capture_output=True, text=True)
        assert r.returncode == 2 and r.stderr.strip().splitlines() == [
            f"error: merged tensor {name} has NaN/Inf values (check the inputs and parameters)"], r.stderr
        assert not (tmp_path / "cli").exists()


# Output digests, same pair and settings. ties / task_arithmetic: unchanged since the pread-based
# implementation (through the memory-mapped numpy rewrite and the C kernel). dare_ties: set on purpose
# with the C kernel, whose rescale sums are defined lanes (see fast.py) instead of the machine's BLAS
# dot product, so this digest holds on any machine (the numpy reference gives the same bytes).
_GOLDEN = {"ties": "1c9b127e56dcccd8b8584f4ace51d76c2fe02d46c649455a6e2a98576ef4edb1",
           "task_arithmetic": "5a16085cbea62a8f04a54064ebd19ccb5d5f42be1b69dce03e3827d9a8b1c287",
           "dare_ties": "00581c6c96c9de9300b58cc3949a2c4646301ad10f35e128da0ef94486ea7860"}


def test_output_is_byte_identical_to_the_golden_digests(tmp_path, monkeypatch):
    import hashlib

    monkeypatch.setattr(fast, "BLOCK", 1000)
    base, (ft,) = make_pair(tmp_path / "m", dtype="bfloat16", tie=False, hidden=64, intermediate=128, vocab=128,
                            shard_size=20_000)
    for hold in (0, 10**12):  # streamed (pages dropped per pass) and held
        monkeypatch.setattr(fast, "HOLD", hold)
        for method, density in (("ties", 0.5), ("task_arithmetic", None), ("dare_ties", 0.4)):
            out = merge(MergeConfig.two_model(base, ft, method=method, weight=0.7, density=density, seed=3,
                                              out=tmp_path / f"{method}-{hold}", threads=2))
            assert hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest() == _GOLDEN[method], (method, hold)


def test_sha256_of_a_file_read_in_chunks_equals_hashlib(tmp_path):
    import hashlib

    from micota.io import sha256_file

    rng = np.random.default_rng(0)
    for size in (0, 1, 4095, 4096, 3 * 4096 + 17):
        p = tmp_path / f"f{size}"
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        p.write_bytes(data)
        assert sha256_file(p, chunk=4096) == hashlib.sha256(data).hexdigest(), size


def test_background_write_back_writes_the_same_bytes(tmp_path):
    from micota.merging.tensorio import ShardedWriter

    rng = np.random.default_rng(1)
    tensors = {f"t{i}": rng.integers(0, 1 << 16, 5000 + i, dtype=np.uint16) for i in range(6)}
    specs = [(k, "BF16", v.shape) for k, v in tensors.items()]
    outs = []
    for wb in (None, 1):  # 1: an fdatasync after every write
        folder = tmp_path / str(wb)
        folder.mkdir()
        w = ShardedWriter(folder, specs, 30_000, writeback=wb)
        for k, v in reversed(tensors.items()):
            for s in range(0, v.size, 999):
                w.write(k, v[s:s + 999], byte_offset=2 * s)
        names = w.finish()
        outs.append([(folder / n).read_bytes() for n in names])
    assert len(outs[0]) > 1 and outs[0] == outs[1]


def test_top_k_fused_into_pass_one_recovers_from_a_missed_bracket(tmp_path, monkeypatch):
    """merge_tensor counts against the sample's bracket during pass 1; when that bracket misses (forced
    here, on either side) the extra passes still find the exact top k."""
    t, d, b, n = _tied_ties_tensor(tmp_path, monkeypatch, 2)
    k = int(0.37 * n)
    order = np.argsort(-np.abs(d), kind="stable")[:k]
    want = np.zeros(n, np.float32)
    want[order] = d[order]
    real = fast._bracket
    for miss in ((0, 0), (0x7F000000, 0x7F000001), None):
        calls = []

        def bracket(sample, n_, k_, miss=miss, calls=calls):
            calls.append(1)
            return miss if (miss is not None and len(calls) <= 2) else real(sample, n_, k_)  # pass 1 and its use
        monkeypatch.setattr(fast, "_bracket", bracket)
        out = []
        fast.merge_tensor(t, 0, "ties", fast._Source(t, (b.view(np.uint32), d.view(np.uint32))),
                          lambda s, blk: out.append(blk.copy()))
        assert np.array_equal(np.concatenate(out), want), miss
