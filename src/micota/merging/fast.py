"""The torch-free fast path: one fine-tune merged onto its base at the I/O bound (numpy + a C kernel).

Used by :func:`micota.merging.merge` for the MiCoTA case — a two-model merge (``--base``/``--finetuned``)
with ``task_arithmetic``, ``ties``, ``dare_ties`` or ``dare_linear``, bf16/fp32 safetensors inputs with
the same tensor names and shapes, scalar parameters, default mode (not ``mergekit_compatible``).
Anything else returns ``None`` from :func:`plan_fast` and runs on the torch engine, which also owns
every error message (so bad input is reported the same way on both paths).

Per tensor (δ = f − b, all arithmetic in float32, rounded once to the output dtype)::

    δ̃ = S(δ)                     S: none | top-k |δ| (ties) | Bernoulli(density) mask (dare)
    δ̃ ← δ̃·‖δ‖₁/‖δ̃‖₁              when rescale (dare) and both norms >= 1e-7
    v = w·δ̃;  v ← v/w (normalize, sign election: one model keeps every nonzero) or v/w' (normalize)
    out = b + λ·v

— the same float32 operation sequence as the torch engine (so float32 merges match it and
mergekit bit for bit, sparsifier ties and the rescale sum aside); for bf16 the torch engine rounds
every step to bf16, this path rounds once (more accurate). bf16 ↔ float32 are bit operations:
``u32 = u16 << 16``; back with round-to-nearest-even ``(u + 0x7FFF + ((u >> 16) & 1)) >> 16``.
The per-element work is the compiled kernel (``kernel.c`` via :mod:`micota.merging.kernel`, compared
bit for bit with a numpy implementation in the tests): ``mk_masks`` (DARE), ``mk_stats`` (pass 1)
and ``mk_apply`` (pass 2), each over :data:`SPAN` blocks per call with the GIL released.
Sums (‖δ‖₁, ‖δ̃‖₁, the report's ‖δ‖₂², ‖b‖₂²) are float64 and defined, not left to a BLAS: per block
of :data:`BLOCK` elements, lane ``i mod 8`` adds element ``i`` in index order, the lanes combine as
``((L0+L1)+(L2+L3))+((L4+L5)+(L6+L7))`` and block totals add in block order — so the DARE rescale
factor, and the output, are the same on every machine. The input files are memory-mapped
(:class:`_Inputs`: tensors are views of the page cache, no copies; finished pages are dropped from
the mapping); each file's sha256 is computed by its own thread (:func:`micota.io.sha256_file`,
reading through an L2-sized buffer, or from the digest cache when the file has not changed since it
was hashed) beside the merge. A tensor above :data:`HOLD` elements (the embedding) drops its pages
behind each pass. DARE masks: block ``j`` of a tensor keeps element ``i``
when the ``i``-th uint32 of ``SFC64(SeedSequence([seed(tensor), j]))`` (numpy's generator, low half
of each 64-bit word first) is below ``density·2³²`` — independent of the thread count and of the
block order; drawn once for the tensor (eight blocks' streams side by side), kept as bits for both
passes. TIES: the exact ``k = max(1, ⌊density·n⌋)`` largest |δ| (ties broken by lowest index): a
sample (runs of neighbours spread over the tensor) brackets the threshold, pass 1 counts the keys
above the bracket and collects those inside, ``np.partition`` finishes (:func:`_topk_threshold`; a
missed bracket costs an extra pass).
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from micota.errors import UserError
from micota.io import sha256_file
from micota.merging import kernel
from micota.merging.config import MergeConfig, resolve_setting
from micota.merging.stage import tensor_seed
from micota.merging.tensorio import RawInfo, ShardedWriter, read_header_raw

BLOCK = 1 << 17  # elements per block: DARE masks and the sums restart per block
SPAN = 4  # blocks per kernel call (the output buffer of a call: 1 MiB bf16)
HOLD = 1 << 24  # tensors with more elements drop their mapped pages behind each pass
EPS = 1e-7
LM_HEAD = "lm_head.weight"
# method -> (sparsifier, sign election, normalize default, rescale default); == methods.METHODS (tested)
METHODS: dict[str, tuple[str | None, bool, bool, bool]] = {
    "task_arithmetic": (None, False, False, False), "ties": ("magnitude", True, True, False),
    "dare_ties": ("random", True, False, True), "dare_linear": ("random", False, False, True),
}
_FLOAT = {"BF16", "F32"}
_CODE = {"bfloat16": "BF16", "float32": "F32"}
# |x| below this stays finite in the output dtype (bf16: 0x7F7F8000 rounds to inf; float32: inf itself)
_FINITE_BELOW = {"BF16": float(np.uint32(0x7F7F8000).view(np.float32)), "F32": float("inf")}
RUN = 8  # TIES sample: neighbouring keys read together (see _Source.sample_keys)
DROP = 32  # a streamed tensor's pages are dropped from this process's mapping every DROP blocks
WRITEBACK = 64 << 20  # output bytes between background fdatasyncs (overlaps the disk write with the merge)


# ------------------------------------------------------------------ planning
@dataclass
class FastTensor:
    name: str
    b: RawInfo
    f: RawInfo
    n: int
    out: str  # output dtype code
    p: dict[str, float]  # weight, density
    shared: dict[str, Any]  # normalize, rescale, lambda


@dataclass
class FastPlan:
    cfg: MergeConfig
    folders: list[Path]  # base, fine-tune
    configs: list[dict[str, Any]]
    tensors: list[FastTensor]  # in the base's file order
    tied: bool
    files: list[Path] = field(default_factory=list)


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def plan_fast(cfg: MergeConfig) -> FastPlan | None:
    """The fast plan, or None when this merge needs the torch engine (see the module docstring)."""
    if cfg.mergekit_compatible or cfg.method not in METHODS or not cfg.base or cfg.allow_pickle:
        return None
    from micota.models import resolve_model

    same = lambda a, b: os.path.realpath(a) == os.path.realpath(b)  # noqa: E731
    entries = [m for m in cfg.models if not same(m.model, cfg.base)]
    if len(entries) != 1 or cfg.dtype not in (None, *_CODE) or cfg.out_dtype not in (None, *_CODE):
        return None
    try:
        folders = [Path(resolve_model(s)) for s in (cfg.base, entries[0].model)]
    except UserError:
        return None  # the torch engine reports it
    if not all(f.is_dir() and list(f.glob("*.safetensors")) for f in folders):
        return None
    try:
        configs = [json.loads((f / "config.json").read_text()) for f in folders]
        infos: list[dict[str, RawInfo]] = []
        for f in folders:
            d: dict[str, RawInfo] = {}
            for shard in sorted(f.glob("*.safetensors")):
                for k, v in read_header_raw(shard).items():
                    if k in d:
                        return None
                    d[k] = v
            infos.append(d)
    except (OSError, ValueError, UserError):
        return None
    if any((c.get("architectures"), c.get("model_type")) != (configs[0].get("architectures"), configs[0].get("model_type"))
           for c in configs):
        return None
    ties = [LM_HEAD not in i or bool(c.get("tie_word_embeddings", False)) for i, c in zip(infos, configs)]
    if ties[0] != ties[1] or set(infos[0]) != set(infos[1]):
        return None
    names = set(infos[0]) - ({LM_HEAD} if ties[0] else set())
    sparsifier, _, normalize, rescale = METHODS[cfg.method]
    params = {**cfg.parameters}
    tensors = []
    for name in names:
        b, f = infos[0][name], infos[1][name]
        if b.shape != f.shape or b.code not in _FLOAT or f.code not in _FLOAT:
            return None
        work = _CODE[cfg.dtype] if cfg.dtype else ("BF16" if b.code == f.code == "BF16" else "F32")
        out = _CODE[cfg.out_dtype] if cfg.out_dtype else work
        if work != "F32" and (b.code, f.code) != ("BF16", "BF16"):
            return None
        p, shared = {}, {}
        for key, default in (("weight", None), ("density", 1.0)):
            raw = resolve_setting(entries[0].parameters.get(key, params.get(key)), name, key)
            v = default if raw is None else _number(raw)
            if v is None:
                return None
            p[key] = v
        if not 0 < p["density"] <= 1 or set(entries[0].parameters) - {"weight", "density"}:
            return None
        for key, default in (("normalize", normalize), ("rescale", rescale), ("lambda", 1.0), ("int8_mask", False)):
            raw = resolve_setting(params.get(key), name, key)
            if raw is None:
                raw = default
            if isinstance(default, bool) != isinstance(raw, bool) or (not isinstance(default, bool) and _number(raw) is None):
                return None
            shared[key] = raw
        if set(params) - {"weight", "density", "normalize", "rescale", "lambda", "int8_mask"}:
            return None
        n = 1
        for s in b.shape:
            n *= s
        tensors.append(FastTensor(name, b, f, n, out, p, shared))
    tensors.sort(key=lambda t: (str(t.b.file), t.b.start))
    files = sorted({i.file for d in infos for i in d.values()})
    return FastPlan(cfg, folders, configs, tensors, ties[0], files)


# ------------------------------------------------------------------ one tensor
class _Inputs:
    """Read-only memory maps of the input files: a tensor is a numpy view of the page cache, so nothing is
    copied by ``read``. Pages a finished tensor (or a streamed tensor's finished blocks) touched are
    dropped from this process's mapping (``MADV_DONTNEED``: they stay in the page cache; a later touch
    maps them again), so the resident set stays a few tensors, not the inputs."""

    def __init__(self, files: list[Path]):
        self.maps: dict[Path, mmap.mmap] = {}
        for f in files:
            with open(f, "rb") as fh:
                self.maps[f] = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)

    def view(self, info: RawInfo) -> np.ndarray:
        dt = np.dtype(np.uint16 if info.code == "BF16" else np.uint32)
        return np.frombuffer(self.maps[info.file], dt, info.nbytes // dt.itemsize, info.start)

    def drop(self, info: RawInfo, lo: int = 0, hi: int | None = None) -> None:
        """Unmap the pages of bytes ``[lo, hi)`` of a tensor (a no-op where madvise is missing)."""
        a = info.start + lo
        b = info.start + (info.nbytes if hi is None else hi)
        a -= a % mmap.PAGESIZE
        if b > a and hasattr(mmap, "MADV_DONTNEED"):
            self.maps[info.file].madvise(mmap.MADV_DONTNEED, a, b - a)

    def close(self) -> None:
        for mm in self.maps.values():
            try:
                mm.close()
            except BufferError:  # a view is still referenced (an exception's traceback): the GC unmaps it
                pass


class _Source:
    """The raw bits of one tensor's base and fine-tune (uint16 bf16 / uint32 float32 arrays: views of the
    memory-mapped files, or any arrays), walked in spans of whole blocks by the kernel. A tensor above
    :data:`HOLD` elements is *streamed*: its pages are dropped behind each pass."""

    def __init__(self, t: FastTensor, views: tuple[np.ndarray, np.ndarray], inputs: _Inputs | None = None):
        self.t, self.views, self.inputs = t, views, inputs
        self.stream = t.n > HOLD

    def job(self) -> kernel.Job:
        b, f = self.views
        return kernel.Job(b=b.ctypes.data, f=f.ctypes.data, b_bf16=b.dtype == np.uint16, f_bf16=f.dtype == np.uint16,
                          out_bf16=self.t.out == "BF16", block=BLOCK)

    def _drop(self, lo: int, hi: int) -> None:
        if self.inputs is not None and self.stream:
            for which, info in enumerate((self.t.b, self.t.f)):
                es = self.views[which].itemsize
                self.inputs.drop(info, lo * es, hi * es)

    def spans(self) -> Iterator[tuple[int, int]]:
        """(start, length) of :data:`SPAN` blocks at a time; a streamed tensor's pages dropped every DROP blocks."""
        step, done = SPAN * BLOCK, 0
        for s in range(0, self.t.n, step):
            m = min(step, self.t.n - s)
            yield s, m
            if s + m - done >= DROP * BLOCK:
                self._drop(done, s + m)
                done = s + m
        self._drop(done, self.t.n)

    def sample_keys(self, step: int) -> np.ndarray:
        """|δ|'s float32 bits at elements ``[j·RUN·step, j·RUN·step + RUN)``, j = 0, 1, … (every element when
        ``step`` is 1; kernel ``mk_sample``): runs of :data:`RUN` neighbours read a few cache lines instead of
        one line per key (a streamed tensor's pages dropped behind)."""
        n = self.t.n
        run = RUN if step > 1 else BLOCK * DROP
        stride = run * step
        span = max(stride, BLOCK * DROP // stride * stride)
        out, got = np.empty(min(n, -(-n // stride) * run), np.uint32), 0
        job, fn = self.job(), kernel.lib().mk_sample
        for s in range(0, n, span):
            e = min(n, s + span)
            job.n, job.b, job.f = e - s, self.views[0][s:].ctypes.data, self.views[1][s:].ctypes.data
            got += fn(ctypes.byref(job), stride, run, out[got:].ctypes.data)
            self._drop(s, e)
        return out[:got]

    def stats(self, job: kernel.Job, bracket: tuple[int, int] | None = None) -> list[np.ndarray]:
        """Pass 1 over the tensor (kernel ``mk_stats``): sums, masks and counts accumulate in ``job``;
        with a ``bracket`` (lo, hi) also the keys above it (``job.gt``) and those inside (returned)."""
        fn, cands = kernel.lib().mk_stats, []
        buf = np.empty(min(self.t.n, SPAN * BLOCK) + 16, np.uint32) if bracket else None  # + the kernel's slack
        if bracket:
            job.lo, job.hi, job.gt = max(0, bracket[0]), min(0xFFFFFFFF, bracket[1]), 0
            job.cands = buf.ctypes.data
        for s, m in self.spans():
            job.start, job.n, job.ncands = s, m, 0
            fn(ctypes.byref(job))
            if bracket:
                cands.append(buf[: job.ncands].copy())
        if bracket and bracket[0] > bracket[1]:  # an empty bracket (a side the counts ruled out)
            cands = []
        job.cands = None
        return cands


def _bracket(sample: np.ndarray, n: int, k: int) -> tuple[int, int]:
    """Keys [lo, hi] that very likely hold the k-th largest of n, from a sample of the keys."""
    m = sample.size
    if not m:
        return 0, 0xFFFFFFFF
    idx = m - k * m / n
    margin = 6 * (m * (k / n) * (1 - k / n)) ** 0.5 + 16
    i, j = max(0, int(idx - margin)), min(m - 1, int(idx + margin))
    part = np.partition(sample, i)  # order statistics i and j (two selections: ~3x cheaper than a sort)
    return int(part[i]), int(np.partition(part[i:], j - i)[j - i])


def _topk_threshold(src: _Source, n: int, k: int, bracket: tuple[int, int],
                    counted: tuple[int, int, int, list[np.ndarray]] | None = None) -> tuple[int, int]:
    """(key, r): the top k of |δ| are the keys > key plus the first r (by index) equal to it.

    Exact. ``bracket`` (from a sample of the keys, :func:`_bracket`) very likely holds the k-th largest;
    one pass counts the keys above it and collects those inside it, where ``np.partition`` finds the
    threshold. ``counted`` (lo, hi, count, candidates) is that pass done already (merge_tensor's pass 1
    with this bracket). A bracket that missed (rare) is moved to the side the counts point to and the
    pass repeated.
    """
    lo, hi = bracket
    for _ in range(4):
        if counted is not None and counted[:2] == (lo, hi):
            gt, cands = counted[2], counted[3]
        else:
            job = src.job()
            cands = src.stats(job, (lo, hi))
            gt = job.gt
        counted = None
        cand = np.concatenate(cands) if cands else np.zeros(0, np.uint32)
        if gt >= k:
            lo, hi = hi + 1, 0xFFFFFFFF
        elif gt + cand.size < k:
            lo, hi = 0, lo - 1
        else:
            rem = k - gt
            thr = int(np.partition(cand, cand.size - rem)[cand.size - rem])
            return thr, rem - int(np.count_nonzero(cand > thr))
    raise RuntimeError("top-k selection did not converge")  # unreachable: the last try spans every key


def merge_tensor(t: FastTensor, seed: int, method: str, src: _Source,
                 write: Callable[[int, np.ndarray], None]) -> dict[str, Any]:
    """Merge one tensor (module docstring), writing output-dtype blocks; returns its report stats."""
    sparsifier, consensus, _, _ = METHODS[method]
    n, p, sh = t.n, t.p, t.shared
    density, w, lam = p["density"], np.float32(p["weight"]), np.float32(sh["lambda"])
    masked = sparsifier == "random" and density < 1
    topk = sparsifier == "magnitude" and density < 1 and n > 0
    rescale = bool(sh["rescale"]) and sparsifier is not None and density < 1
    k = max(1, int(density * n)) if topk else n
    job, kept = src.job(), n
    # DARE masks first (as bits, all blocks of the tensor); pass 1: the report's sums, Σ|δ|·m; for top-k the keys
    # above / inside a bracket from a sample taken first (the threshold then needs no pass of its own)
    if masked:
        tseed = tensor_seed(seed, t.name, 0)
        states = np.array([np.random.SeedSequence([tseed, j]).generate_state(3, np.uint64)
                           for j in range(-(-n // BLOCK))], np.uint64)
        bits = np.zeros((n + 7) // 8, np.uint8)
        job.states, job.bits, job.keep_below = states.ctypes.data, bits.ctypes.data, min(round(density * 2.0 ** 32), 2 ** 32)
        job.n = n
        kernel.lib().mk_masks(ctypes.byref(job))
        job.states = None
    if topk:
        sample = src.sample_keys(max(1, n // 65536))
        lo, hi = _bracket(sample, n, k)
        cands = src.stats(job, (lo, hi))
    else:
        src.stats(job)
    before, dd, bb = job.sum[0], job.sum[2], job.sum[3]
    after = job.sum[1]
    if masked:
        kept = job.kept
    if topk:
        job.thr, r = _topk_threshold(src, n, k, (lo, hi), (lo, hi, job.gt, cands))
        job.topk, job.left, kept = 1, r, k
        if rescale:  # (not a default of any fast method) the norm after trimming needs the threshold
            again = src.job()
            again.topk, again.thr, again.left = 1, job.thr, r
            src.stats(again)
            after = again.sum[1]
    if rescale and not (np.float32(before) < EPS or np.float32(after) < EPS):
        with np.errstate(all="ignore"):  # a non-finite δ: NaN here, and pass 2 reports the tensor in one line
            job.has_scale, job.scale = 1, np.float32(before) / np.float32(after)
    job.w = w
    if sh["normalize"]:  # with sign election Σ w·[elected] is w where δ̃ ≠ 0 (else the divisor is 1 and v is 0)
        job.has_div, job.div = (int(w != 0), w) if consensus else (1, np.float32(1) if abs(float(w)) < 1e-8 else w)
    job.has_lam, job.lam, job.limit = int(lam != 1), lam, _FINITE_BELOW[t.out]
    out = np.empty(min(n, SPAN * BLOCK), np.uint16 if t.out == "BF16" else np.float32)
    job.out, fn = out.ctypes.data, kernel.lib().mk_apply
    for s, m in src.spans():  # pass 2: apply, round, check, write
        job.start, job.n = s, m
        fn(ctypes.byref(job))
        if job.bad:
            raise UserError(f"merged tensor {t.name} has NaN/Inf values (check the inputs and parameters)")
        write(s, out[:m])
    with np.errstate(over="ignore"):  # a finite ‖δ‖₁ beyond float32's range is reported as inf
        l1 = float(np.float32(before))
    return {"delta_l1": [l1], "kept_fraction": [round(kept / max(1, n), 6)],
            "_task_vector_sq": (bb, dd)}


# ------------------------------------------------------------------ the whole merge
def run_fast(plan: FastPlan, tmp: Path, threads: int) -> tuple[list[str], dict[str, Any], dict[Path, str]]:
    """Merge every tensor into ``tmp`` (shards, per-tensor stats, sha256 of the input weight files).

    The inputs are memory-mapped; ``threads`` workers merge tensors in file order (at most
    ``threads + 1`` in flight) while one thread per input file (two at most at once) computes its sha256
    from its own mapping, and the writer's flusher thread starts the disk write-back as blocks arrive.
    """
    from tqdm import tqdm

    cfg = plan.cfg
    kernel.lib()  # built on first use; no compiler: one line before any work starts
    specs = sorted((t.name, t.out, t.b.shape) for t in plan.tensors)
    try:
        inputs = _Inputs(plan.files)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot map the input weights ({e})") from None
    hashing = ThreadPoolExecutor(min(2, len(plan.files)) or 1, thread_name_prefix="sha256")
    digests = {f: hashing.submit(_digest, f) for f in plan.files}
    writer = ShardedWriter(tmp, specs, _size(cfg.shard_size), writeback=WRITEBACK)
    stats: dict[str, Any] = {}
    errors: list[BaseException] = []
    slots = threading.BoundedSemaphore(threads + 1)
    bar = tqdm(total=len(plan.tensors), desc="merge", unit="tensor", disable=None)
    pool = ThreadPoolExecutor(threads, thread_name_prefix="merge")

    def job(t: FastTensor) -> dict[str, Any]:
        es = 2 if t.out == "BF16" else 4
        try:
            return merge_tensor(t, cfg.seed, cfg.method, _Source(t, (inputs.view(t.b), inputs.view(t.f)), inputs),
                                lambda s, blk: writer.write(t.name, blk, byte_offset=s * es))
        finally:
            inputs.drop(t.b)
            inputs.drop(t.f)

    try:
        for t in plan.tensors:
            if errors:
                break
            slots.acquire()
            fut = pool.submit(job, t)

            def done(f: Future, name: str = t.name) -> None:
                slots.release()
                bar.update(1)
                if f.exception() is not None:
                    errors.append(f.exception())
                else:
                    stats[name] = f.result()
            fut.add_done_callback(done)
        pool.shutdown(wait=True)
        known = {f: d.result() for f, d in digests.items()} if not errors else {}
    except OSError as e:
        errors.append(e)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        hashing.shutdown(wait=True, cancel_futures=True)
        bar.close()
        if errors:
            writer.close()
        inputs.close()
    if errors:
        e = errors[0]
        if isinstance(e, OSError):
            raise UserError(f"{cfg.out}: writing the merged model failed ({e.strerror or e})") from None
        raise e
    try:
        shards = writer.finish()
    except OSError as e:
        raise UserError(f"{cfg.out}: writing the merged model failed ({e.strerror or e})") from None
    finally:
        writer.close()
    return shards, dict(sorted(stats.items())), known


def _digest(f: Path) -> str:
    try:
        return sha256_file(f)
    except OSError as e:
        raise UserError(f"{f}: cannot read ({e.strerror or e})") from None


def _size(s: str) -> int:
    from micota.merging.config import parse_size

    return parse_size(s)
