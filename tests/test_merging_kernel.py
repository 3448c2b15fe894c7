"""The compiled merge kernel (micota/merging/kernel.c) against a numpy implementation of the same formula
(tests/merge_reference.py), bit for bit: outputs, sums, DARE masks (numpy's own SFC64), the exact
TIES top-k, on sizes that are not multiples of the kernel's chunk (1024), of 8 or of the block."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import merge_reference as ref
from micota.errors import UserError
from micota.merging import fast, kernel
from micota.merging.tensorio import RawInfo


def _run(b_raw, f_raw, out, method, density, w, lam, seed, name="x"):
    n = b_raw.size
    info = RawInfo(name, None, "F32", (n,), 0, 4 * n)
    _, _, normalize, rescale = fast.METHODS[method]
    t = fast.FastTensor(name, info, info, n, out, {"weight": w, "density": density},
                        {"normalize": normalize, "rescale": rescale, "lambda": lam})
    blocks = []
    stats = fast.merge_tensor(t, seed, method, fast._Source(t, (b_raw, f_raw)), lambda s, blk: blocks.append(blk.copy()))
    got = np.concatenate(blocks) if blocks else np.zeros(0, np.uint16 if out == "BF16" else np.float32)
    return got.view(np.uint16 if out == "BF16" else np.uint32), stats, t


def _raw(rng, n, bf16, scale=1.0):
    x = (rng.standard_normal(n) * scale).astype(np.float32)
    return ref.f32_to_bf16(x) if bf16 else x.view(np.uint32)


@pytest.fixture(params=[False, True], ids=["vector", "portable"])
def code_path(request):
    """The CPU's vector paths (AVX-512 where it has it), then the portable loops on the same cases."""
    kernel.lib().mk_portable(int(request.param))
    yield request.param
    kernel.lib().mk_portable(0)


@pytest.mark.parametrize("block", [1000, 997, 4096])  # 997: chunks that start off a multiple of 8 as well
def test_kernel_equals_the_numpy_reference_bit_for_bit(monkeypatch, block, code_path):
    monkeypatch.setattr(fast, "BLOCK", block)
    monkeypatch.setattr(fast, "SPAN", 2)
    rng = np.random.default_rng(block)
    cases = [("task_arithmetic", 1.0, 0.7, 1.0), ("ties", 0.37, 0.5, 1.0), ("ties", 0.8, 1.0, 1.3),
             ("dare_ties", 0.6, 0.7, 1.0), ("dare_ties", 0.3, 0.0, 1.0), ("dare_linear", 0.45, -0.4, 0.9),
             ("task_arithmetic", 1.0, 1e-9, 2.0)]
    for n in (1, 7, 8, 1023, 1024, 1025, 2 * block + 5, 9 * block + 1031):
        for bf16_in, out in ((True, "BF16"), (False, "F32"), (True, "F32"), (False, "BF16")):
            b = _raw(rng, n, bf16_in)
            f = (ref.bf16_to_f32(b) if bf16_in else b.view(np.float32)) + (rng.standard_normal(n) * 0.02).astype(np.float32)
            f = ref.f32_to_bf16(f) if bf16_in else f.view(np.uint32)
            if n > 100:
                f[:50] = b[:50]  # some zero deltas (and -0.0 / +0.0 products)
            for method, density, w, lam in cases:
                got, stats, t = _run(b, f, out, method, density, w, lam, 11)
                sparsifier, consensus, normalize, rescale = fast.METHODS[method]
                want, before, dd, bb, kept = ref.merge(b, f, out == "BF16", sparsifier, consensus, normalize, rescale,
                                                       density, w, lam, fast.tensor_seed(11, "x", 0), block)
                key = (n, bf16_in, out, method, density, w)
                assert np.array_equal(got, want), key
                assert stats["delta_l1"] == [float(np.float32(before))], key
                assert stats["_task_vector_sq"] == (bb, dd), key
                assert stats["kept_fraction"] == [round(kept / n, 6)], key


def test_kernel_rescaled_ties_and_the_mask_are_numpy_sfc64(monkeypatch):
    """TIES with rescale on (not a default: an extra pass after the threshold); DARE's kept count is
    what numpy's SFC64 draws keep."""
    monkeypatch.setattr(fast, "BLOCK", 1000)
    rng = np.random.default_rng(3)
    b, f = _raw(rng, 5321, False), _raw(rng, 5321, False)
    monkeypatch.setitem(fast.METHODS, "ties", ("magnitude", True, True, True))
    got, _, _ = _run(b, f, "F32", "ties", 0.3, 0.8, 1.0, 5)
    want = ref.merge(b, f, False, "magnitude", True, True, True, 0.3, 0.8, 1.0, 0, 1000)[0]
    assert np.array_equal(got, want)
    _, stats, _ = _run(b, f, "F32", "dare_linear", 0.25, 1.0, 1.0, 5)
    seed = fast.tensor_seed(5, "x", 0)
    kept = sum(int(ref.keep_mask(seed, j, min(1000, 5321 - s), 0.25).sum()) for j, s in enumerate(range(0, 5321, 1000)))
    assert stats["kept_fraction"] == [round(kept / 5321, 6)]



def test_ties_sample_is_the_keys_of_runs_of_neighbours(monkeypatch):
    """mk_sample: |δ|'s float32 bits (numpy's f32(f) − f32(b)) of elements [j·8·step, j·8·step + 8), every
    element for step 1, across several spans of a streamed tensor and partial runs at the end."""
    monkeypatch.setattr(fast, "BLOCK", 1000)
    monkeypatch.setattr(fast, "DROP", 2)
    rng = np.random.default_rng(4)
    for n in (1, 9, 1999, 7321):
        for bf16_b, bf16_f in ((True, True), (False, False), (True, False)):
            b, f = _raw(rng, n, bf16_b), _raw(rng, n, bf16_f, 0.5)
            to32 = lambda r: ref.bf16_to_f32(r) if r.dtype == np.uint16 else r.view(np.float32)  # noqa: E731
            keys = np.abs(to32(f) - to32(b)).view(np.uint32)
            info = RawInfo("x", None, "F32", (n,), 0, 4 * n)
            t = fast.FastTensor("x", info, info, n, "F32", {"weight": 1.0, "density": 0.5}, {})
            for step in (1, 3, 70):
                idx = np.arange(n) if step == 1 else np.array([i for s in range(0, n, fast.RUN * step)
                                                               for i in range(s, min(n, s + fast.RUN))], int)
                got = fast._Source(t, (b, f)).sample_keys(step)
                assert np.array_equal(got, keys[idx]), (n, bf16_b, bf16_f, step)


@pytest.mark.parametrize("portable", [False, True])
def test_bracket_counts_and_candidates_on_both_code_paths(monkeypatch, portable):
    """Pass 1's TIES bracket (keys above hi counted, keys in [lo, hi] collected in index order) — on this
    CPU's vector path and on the portable loop (mk_portable), also for sizes not a multiple of 16."""
    monkeypatch.setattr(fast, "BLOCK", 1000)
    lib = kernel.lib()
    lib.mk_portable(int(portable))
    try:
        rng = np.random.default_rng(5)
        for n in (1, 15, 17, 1023, 5321):
            b, f = _raw(rng, n, True), _raw(rng, n, True, 0.5)
            keys = np.abs(ref.bf16_to_f32(f) - ref.bf16_to_f32(b)).view(np.uint32)
            info = RawInfo("x", None, "BF16", (n,), 0, 2 * n)
            t = fast.FastTensor("x", info, info, n, "BF16", {"weight": 1.0, "density": 0.5}, {})
            s = np.sort(keys)
            for lo, hi in ((s[n // 3], s[n // 2]), (0, 0xFFFFFFFF), (s[-1], s[-1]), (5, 4)):
                src = fast._Source(t, (b, f))
                job = src.job()
                cands = src.stats(job, (int(lo), int(hi)))
                want = keys[(keys >= lo) & (keys <= hi)]
                got = np.concatenate(cands) if cands else np.zeros(0, np.uint32)
                assert job.gt == int((keys > hi).sum()) and np.array_equal(got, want), (n, lo, hi, portable)
    finally:
        lib.mk_portable(0)

def test_numpy_reference_conversions_are_bit_exact_against_torch():
    """The reference's bf16 <-> float32 (the kernel's, by the test above) against torch's."""
    every = np.arange(1 << 16, dtype=np.uint16)
    finite = every[(every & 0x7F80) != 0x7F80]
    want = torch.from_numpy(finite.view(np.int16).copy()).view(torch.bfloat16).float().numpy()
    assert np.array_equal(ref.bf16_to_f32(finite).view(np.uint32), want.view(np.uint32))
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 0x7F7F7FFF, 1 << 20, dtype=np.uint32) | (rng.integers(0, 2, 1 << 20, dtype=np.uint32) << 31)
    edge = np.array([0x3F808000, 0x3F818000, 0x3F807FFF, 0x3F808001, 0x00008000, 0x00018000, 0x7F7F7FFF,
                     0x80000000, 0x00000001, 0xBF808000], dtype=np.uint32)  # halfway ties (even/odd), subnormals
    x = np.concatenate([bits, edge]).view(np.float32)
    want16 = torch.from_numpy(x.copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(ref.f32_to_bf16(x), want16)
    # the kernel's rounding on the same bits: task arithmetic with b = -0.0, w = 1 writes round(f)
    # (f = -0.0 gives δ = +0.0 and +0.0 out: zeros compared by value)
    got, _, _ = _run(np.full(x.size, 0x80000000, np.uint32), x.view(np.uint32), "BF16", "task_arithmetic", 1.0, 1.0, 1.0, 0)
    nz = x != 0
    assert np.array_equal(got[nz], want16[nz]) and not got[~nz].any()


def test_lane_sums_are_the_defined_order_not_a_pairwise_one():
    """A case where the order matters: the kernel's Σ|δ| equals the lane definition, not numpy's sum."""
    x = np.array([1.0, 2.0 ** -30] * 4000, np.float32)
    b = np.zeros(x.size, np.uint32)
    _, stats, _ = _run(b, x.view(np.uint32), "F32", "task_arithmetic", 1.0, 1.0, 1.0, 0)
    assert stats["delta_l1"] == [float(np.float32(ref.lane_sum(x.astype(np.float64), fast.BLOCK)))]
    assert stats["_task_vector_sq"][1] == ref.lane_sum(x.astype(np.float64) ** 2, fast.BLOCK)


def test_kernel_is_built_once_and_a_missing_compiler_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MICOTA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", "no-such-compiler-xyz")
    path = kernel.library_path()
    with pytest.raises(UserError, match="needs a C compiler"):
        kernel.build(path)
    assert not path.exists() and not list(path.parent.glob("*.tmp"))
    monkeypatch.setenv("CC", "cc")
    path = kernel.library_path()
    kernel.build(path)
    assert path.is_file() and not list(path.parent.glob("*.tmp"))
    assert kernel.lib().mk_job_size() == __import__("ctypes").sizeof(kernel.Job)
