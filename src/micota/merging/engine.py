"""The streaming merge: ``merge(MergeConfig) -> Path``.

1. :func:`micota.merging.plan.make_plan` checks everything (nothing is written before it passes).
2. Tensors are merged one at a time each, several in parallel (``threads``) while the estimated
   bytes of the tensors in flight stay under ``max_bytes_in_flight`` (a bigger one runs alone).
   Each task reads its inputs lazily, merges in the working dtype with torch intra-op threads set
   to 1 (so results do not depend on the thread count), checks for NaN/Inf and writes the bytes
   straight into the preallocated output shard.
3. Randomness. Default: each (tensor, model) mask has its own generator seeded from
   ``sha256(seed, tensor name, model index)`` — byte-identical output for any ``threads``.
   ``mergekit_compatible``: one generator seeded once with ``seed`` and tensors merged strictly in
   sorted-name order (as mergekit 0.1.5's scheduler does), plus mergekit's argsort tie-breaking —
   byte-identical to ``mergekit-yaml --random-seed N -j 1``.
4. The output is built in a temporary sibling directory (``micota.io.atomic_dir``) with config,
   tokenizer and generation config from the base, ``merge_report.json`` and, last,
   ``manifest.json``; it is renamed to ``out`` only when complete.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from micota.errors import UserError
from micota.finite import all_finite
from micota.io import atomic_dir, cached_sha256, remember_sha256
from micota.merging.config import MergeConfig, parse_size
from micota.merging import sparsify as sp
from micota.merging.methods import TensorContext, stream_single
from micota.merging.plan import Plan, TensorPlan, make_plan
from micota.merging.stage import TV, cpus, finish, hash_inputs, tensor_seed, write_side_files
from micota.merging.tensorio import FileHasher, ShardedWriter



class _Budget:
    """In-flight bound: ``acquire(n)`` blocks until n more bytes fit and fewer than ``max_tasks`` tensors
    are in flight (reading ahead further only costs memory). A lone oversize tensor is let through."""

    def __init__(self, limit: int, max_tasks: int):
        self.limit, self.max_tasks, self.used, self.tasks, self.cv = limit, max_tasks, 0, 0, threading.Condition()

    def acquire(self, n: int) -> int:
        n = min(n, self.limit)
        with self.cv:
            self.cv.wait_for(lambda: self.used + n <= self.limit and self.tasks < self.max_tasks)
            self.used += n
            self.tasks += 1
        return n

    def release(self, n: int) -> None:
        with self.cv:
            self.used -= n
            self.tasks -= 1
            self.cv.notify_all()


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


STREAM_MIN = 2 * sp.CHUNK  # tensors with more elements than this stream in blocks when they can


def _streams(plan: Plan, t: TensorPlan, compat: bool) -> bool:
    """Merged block by block from the files (methods.stream_single) instead of loaded whole?"""
    return (not compat and t.merge and plan.has_base and len(plan.inputs) == 2 and plan.spec.stream is not None
            and t.rows is None and t.work in (torch.bfloat16, torch.float32) and _numel(t.shape) > STREAM_MIN
            and not any(i.weights.pickled for i in plan.inputs))


def _estimate(plan: Plan, t: TensorPlan, exact_sort: bool) -> int:
    numel = _numel(t.shape)
    n = len(plan.inputs)
    es = t.work.itemsize
    if _streams(plan, t, exact_sort):  # a few blocks: base, δ, the mask, float32 temporaries
        return sp.CHUNK * (2 * es + 1 + 8)
    if n == 2 and not exact_sort:  # the in-place single-model path: base + δ + a bool mask
        return numel * (2 * es + 1)
    return numel * (n * es + (n + 4) * es + (12 if exact_sort else 1))


def _load(plan: Plan, t: TensorPlan, hasher: FileHasher | None = None, tickets: list[int | None] | None = None) -> list[torch.Tensor]:
    tickets = tickets or [None] * len(plan.inputs)
    ts: list[torch.Tensor] = []
    try:
        for inp, k, ticket in zip(plan.inputs, t.keys, tickets):
            ts.append(inp.weights.read(k, hasher, ticket))
    except BaseException:
        for inp, k, ticket in list(zip(plan.inputs, t.keys, tickets))[len(ts):]:
            if ticket is not None and hasher is not None:
                hasher.skip(inp.weights.infos[k].file, ticket)
        raise
    if t.rows is not None:  # vocabulary policy: truncate, or pad rows from the largest input
        ref = next(x for x in ts if x.shape[0] >= t.rows)
        ts = [x[: t.rows] if x.shape[0] >= t.rows else torch.cat([x, ref[x.shape[0]: t.rows]]) for x in ts]
    return [x.to(t.work) for x in ts]


def _sq_norms(base: torch.Tensor, ft: torch.Tensor) -> tuple[float, float]:
    """(‖b‖₂², ‖f − b‖₂²) in float64 per chunk (no full-size temporary). Torch's own reduction, not BLAS
    ``dot``: BLAS splits a dot product over its own threads, so its float sums (and the report) would
    depend on ``OMP_NUM_THREADS``; the merge runs torch single-threaded, so these do not."""
    from micota.merging.methods import _chunks

    bb = dd = 0.0
    for bc, fc in _chunks(base.contiguous(), ft.contiguous()):
        b64 = bc.double()
        bb += float((b64 * b64).sum())
        d64 = fc.double().sub_(b64)
        dd += float((d64 * d64).sum())
    return bb, dd


def _stream_one(plan: Plan, t: TensorPlan, writer: ShardedWriter, seed: int) -> dict[str, Any]:
    """A big tensor of a two-model merge, two passes over blocks read straight from the files."""
    (bw, bk), (fw, fk) = [(i.weights, k) for i, k in zip(plan.inputs, t.keys)]
    tv = [0.0, 0.0]
    seen: set[int] = set()

    def read(start: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        b, f = bw.read_range(bk, start, count).to(t.work), fw.read_range(fk, start, count).to(t.work)
        if plan.task_vector and start not in seen:  # first pass only
            seen.add(start)
            bb, dd = _sq_norms(b, f)
            tv[0], tv[1] = tv[0] + bb, tv[1] + dd
        return b, f

    def write(start: int, block: torch.Tensor) -> None:
        out = block.to(t.out)
        if not _all_finite(out):
            raise UserError(f"merged tensor {t.name} has NaN/Inf values (check the inputs and parameters)")
        writer.write(t.name, out, byte_offset=start * out.element_size())

    ctx = TensorContext(t.name, lambda i: torch.Generator().manual_seed(tensor_seed(seed, t.name, i)))
    sparsifier, consensus = plan.spec.stream
    with torch.no_grad():
        stream_single(read, write, _numel(t.shape), t.work, t.per_model[0], t.shared, ctx, sparsifier, consensus)
    stats: dict[str, Any] = {k: ([round(x, 6) for x in v] if isinstance(v, list) else v) for k, v in ctx.stats.items()}
    if plan.task_vector:
        stats[_TV] = (tv[0], tv[1])
    return stats


def _merge_one(plan: Plan, t: TensorPlan, loaded: Future, writer: ShardedWriter, seed: int, compat: bool,
               shared_gen: torch.Generator) -> dict[str, Any]:
    if _streams(plan, t, compat):
        return _stream_one(plan, t, writer, seed)
    ts = loaded.result()
    if not t.merge:
        writer.write(t.name, ts[0])
        return {}
    tv = _sq_norms(ts[plan.task_vector[0]], ts[plan.task_vector[1]]) if plan.task_vector else None
    gen = (lambda i: shared_gen) if compat else (lambda i: torch.Generator().manual_seed(tensor_seed(seed, t.name, i)))
    ctx = TensorContext(t.name, gen, exact_sort=compat)
    base, models = (ts[0], ts[1:]) if plan.has_base else (None, ts)
    with torch.no_grad():
        out = plan.spec.fn(base, models, t.per_model, t.shared, ctx)
        out = out.to(t.out)
        if not _all_finite(out):
            raise UserError(f"merged tensor {t.name} has NaN/Inf values (check the inputs and parameters)")
    writer.write(t.name, out)
    stats = {k: (round(v, 6) if isinstance(v, float) else [round(x, 6) for x in v] if isinstance(v, list) else v)
             for k, v in ctx.stats.items()}
    if tv is not None:
        stats[_TV] = tv  # summed in name order by _task_vector, then dropped from the per-tensor stats
    return stats


_TV = TV


_all_finite = all_finite  # the shared NaN/Inf check (micota.finite), also used by bpc


def merge(cfg: MergeConfig) -> Path:
    """The torch engine (``micota.merging.merge`` sends the fast path's cases to :mod:`micota.merging.fast`)."""
    if cfg.out is None:
        raise UserError("merge: no output folder given (out)")
    started = time.time()
    plan = make_plan(cfg)
    shard_size = parse_size(cfg.shard_size)
    threads = 1 if cfg.mergekit_compatible else (cfg.threads or min(4, cpus()))
    budget = _Budget(parse_size(cfg.max_bytes_in_flight), max_tasks=threads + 2)
    if not cfg.mergekit_compatible:  # file order: the one-pass hashing then reads nothing twice
        first = plan.inputs[0].weights.infos
        plan.tensors.sort(key=lambda t: (str(first[t.keys[0]].file), first[t.keys[0]].start))
    files = sorted({f for i in plan.inputs if not i.weights.pickled for f in i.weights.files})
    stamps = {f: (os.stat(f), time.time_ns()) for f in files}
    known = {f: d for f in files if (d := cached_sha256(f, stamps[f][0])) is not None}  # unchanged since hashed
    hasher = FileHasher([f for f in files if f not in known])
    shared_gen = torch.Generator().manual_seed(cfg.seed)
    stats: dict[str, Any] = {}
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with atomic_dir(cfg.out, overwrite=cfg.overwrite) as tmp:
            specs = sorted((t.name, t.out, t.shape) for t in plan.tensors)  # name order, whatever the merge order
            writer = ShardedWriter(tmp, specs, shard_size)
            try:
                _run(plan, cfg, writer, budget, threads, shared_gen, stats, hasher)
                shards = writer.finish()
            except OSError as e:
                raise UserError(f"{cfg.out}: writing the merged model failed ({e.strerror or e})") from None
            finally:
                writer.close()
            dtypes = {t.out for t in plan.tensors if t.merge}
            write_side_files(plan.inputs[0].folder, plan.inputs[0].config, tmp, plan.tied_out, plan.vocab_out,
                             str(next(iter(dtypes))).removeprefix("torch.") if len(dtypes) == 1 else None)
            computed = hasher.finish()
            for f, d in computed.items():
                remember_sha256(f, d, *stamps[f])
            keys = [("base" if plan.has_base and i == 0 else f"model_{i - int(plan.has_base)}", inp.folder)
                    for i, inp in enumerate(plan.inputs)]
            finish(tmp, cfg, started, threads=threads, shards=shards, stats=stats, tied=plan.tied_out,
                   vocab=plan.vocab_out, hashes=hash_inputs(keys, {**known, **computed}), n_tensors=len(plan.tensors),
                   engine="torch")
    finally:
        torch.set_num_threads(prev_threads)
    return Path(cfg.out)


def _run(plan: Plan, cfg: MergeConfig, writer: ShardedWriter, budget: _Budget, threads: int,
         shared_gen: torch.Generator, stats: dict[str, Any], hasher: FileHasher) -> None:
    from tqdm import tqdm

    errors: list[BaseException] = []
    bar = tqdm(total=len(plan.tensors), desc="merge", unit="tensor", file=sys.stderr, disable=None)
    loaders = ThreadPoolExecutor(max(2, threads), thread_name_prefix="merge-read")
    workers = ThreadPoolExecutor(threads, thread_name_prefix="merge")
    futures = []
    try:
        for t in plan.tensors:
            if errors:
                break
            need = budget.acquire(_estimate(plan, t, cfg.mergekit_compatible))
            if _streams(plan, t, cfg.mergekit_compatible):
                loaded = None  # read block by block by the merge task (the hasher catches up on those bytes)
            else:
                tickets = [hasher.schedule(i.weights.infos[k].file) for i, k in zip(plan.inputs, t.keys)]
                loaded = loaders.submit(_load, plan, t, hasher, tickets)
            fut = workers.submit(_merge_one, plan, t, loaded, writer, cfg.seed, cfg.mergekit_compatible, shared_gen)

            def done(f: Future, need: int = need, name: str = t.name) -> None:
                budget.release(need)
                bar.update(1)
                if f.cancelled():
                    return
                if f.exception() is not None:
                    errors.append(f.exception())
                else:
                    stats[name] = f.result()
            fut.add_done_callback(done)
            futures.append(fut)
        for f in futures:
            if not f.cancelled():
                f.exception()
    finally:
        if errors or sys.exc_info()[0] is not None:
            hasher.abort()  # cancelled reads never take their turn: wake the readers waiting for them
        workers.shutdown(wait=True, cancel_futures=True)
        loaders.shutdown(wait=True, cancel_futures=True)
        bar.close()
    if errors:
        raise errors[0]
    stats_sorted = dict(sorted(stats.items()))
    stats.clear()
    stats.update(stats_sorted)
