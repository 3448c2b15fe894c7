"""The merge stage, ``merge(MergeConfig) -> Path``: picks the engine and writes the output folder.

The MiCoTA case (one fine-tune onto its base, task_arithmetic / ties / dare_ties / dare_linear, bf16
or fp32 safetensors, default mode) runs on the torch-free fast path (:mod:`micota.merging.fast`,
numpy only: no torch import, float32 math rounded once); everything else — more models, other
methods, ``mergekit_compatible``, pickle inputs, vocabulary policies — on the torch engine
(:mod:`micota.merging.engine`), which also owns every error message. Both write the same folder:
weights, config and tokenizer files from the base, ``merge_report.json`` and, last,
``manifest.json``, built in a temporary sibling and renamed into place when complete.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import time
from pathlib import Path
from typing import Any

from micota.errors import UserError
from micota.io import atomic_dir, atomic_write_json, sha256_file, visible_files
from micota.manifest import write_manifest
from micota.merging.config import MergeConfig

TOKENIZER_FILES = ["tokenizer_config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer.model",
                   "added_tokens.json", "merges.txt", "vocab.json", "chat_template.jinja", "chat_template.json",
                   "generation_config.json"]
TV = "_task_vector_sq"  # per-tensor (‖b‖², ‖f − b‖²), summed into the report's task_vector block
_DTYPE_NAMES = {"BF16": "bfloat16", "F32": "float32", "F16": "float16", "F64": "float64"}


def tensor_seed(seed: int, name: str, index: int) -> int:
    """The default mode's per-(tensor, model) seed: first 63 bits of sha256('seed:name:index')."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}:{index}".encode()).digest()[:8], "little") >> 1


def cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def merge(cfg: MergeConfig) -> Path:
    """Merge ``cfg.models`` (onto ``cfg.base``) with ``cfg.method``; returns the output folder."""
    if cfg.out is None:
        raise UserError("merge: no output folder given (out)")
    from micota.merging.fast import plan_fast, run_fast

    started = time.time()
    plan = plan_fast(cfg)
    if plan is None:
        from micota.merging.engine import merge as torch_merge

        return torch_merge(cfg)
    threads = cfg.threads or min(4, cpus())
    with atomic_dir(cfg.out, overwrite=cfg.overwrite) as tmp:
        shards, stats, known = run_fast(plan, tmp, threads)
        dtypes = {t.out for t in plan.tensors}
        write_side_files(plan.folders[0], plan.configs[0], tmp, plan.tied, None,
                         _DTYPE_NAMES[next(iter(dtypes))] if len(dtypes) == 1 else None)
        finish(tmp, cfg, started, threads=threads, shards=shards, stats=stats, tied=plan.tied, vocab=None,
               hashes=hash_inputs([("base", plan.folders[0]), ("model_0", plan.folders[1])], known),
               n_tensors=len(plan.tensors), engine="fast")
    return Path(cfg.out)


def task_vector(stats: dict[str, Any]) -> dict[str, float] | None:
    """The report's ``task_vector`` block from the per-tensor squared norms (floating-point tensors only)."""
    parts = [stats[k].pop(TV) for k in sorted(stats) if TV in stats[k]]
    if not parts:
        return None
    base, delta = sum(b for b, _ in parts) ** 0.5, sum(d for _, d in parts) ** 0.5
    return {"base_norm": base, "delta_norm": delta, "relative": delta / base if base > 0 else None}


def hash_inputs(inputs: list[tuple[str, Path]], known: dict[Path, str]) -> dict[str, Any]:
    """Per-file sha256 of every input folder plus the folder hash (same recipe as micota.io.sha256_path);
    ``known`` are the weight files' digests computed while reading them."""
    out: dict[str, Any] = {}
    for key, folder in inputs:
        files, h = {}, hashlib.sha256()
        for p in visible_files(folder):
            rel = p.relative_to(folder)
            files[str(rel)] = known.get(p) or sha256_file(p)
            h.update(str(rel).encode() + b"\0" + files[str(rel)].encode() + b"\n")
        out[key] = {"path": str(folder), "sha256": h.hexdigest(), "files": files}
    return out


def write_side_files(src: Path, config: dict[str, Any], tmp: Path, tied_out: bool, vocab_out: int | None,
                     dtype: str | None) -> None:
    """config.json (tying, vocabulary size and dtype of the output) and the tokenizer files of ``src``."""
    cfg = dict(config)
    cfg["tie_word_embeddings"] = tied_out
    if vocab_out is not None:
        cfg["vocab_size"] = vocab_out
    if dtype is not None:
        cfg["dtype"] = dtype
        if "torch_dtype" in cfg:
            cfg["torch_dtype"] = dtype
    atomic_write_json(tmp / "config.json", cfg)
    for f in TOKENIZER_FILES:
        if (src / f).is_file():
            shutil.copyfile(src / f, tmp / f)


def finish(tmp: Path, cfg: MergeConfig, started: float, *, threads: int, shards: list[str], stats: dict[str, Any],
           tied: bool, vocab: int | None, hashes: dict[str, Any], n_tensors: int, engine: str) -> None:
    """``merge_report.json`` then ``manifest.json`` (last)."""
    tv = task_vector(stats)
    report = {
        "method": cfg.method, "seed": cfg.seed, "mergekit_compatible": cfg.mergekit_compatible, "engine": engine,
        "parameters": cfg.parameters, "models": [m.model_dump() for m in cfg.models], "base": cfg.base,
        "dtype": cfg.dtype, "out_dtype": cfg.out_dtype, "tie_word_embeddings": tied,
        "vocab_size": vocab, "threads": threads, "shards": shards,
        "wall_s": round(time.time() - started, 3),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "inputs": hashes, "task_vector": tv, "tensors": stats,
    }
    atomic_write_json(tmp / "merge_report.json", report)
    write_manifest(tmp, stage="merge", config=cfg, started_at=started,
                   counts={"tensors": n_tensors, "shards": len(shards)},
                   extra={"inputs": {k: v["sha256"] for k, v in hashes.items()}})
