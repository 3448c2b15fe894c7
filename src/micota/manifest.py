"""Stage manifests: ``manifest.json`` is written last in every stage output directory.

A manifest records the stage name, the resolved config and its hash, the hashes of the inputs,
the package version, counts, and ``complete: true``. A directory without a complete manifest is
unfinished: the pipeline resumes or recomputes it, never trusts it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from micota import __version__
from micota.io import atomic_write_json, read_json, sha256_path

MANIFEST = "manifest.json"


def input_hashes(inputs: dict[str, str | os.PathLike | None]) -> dict[str, str]:
    """Hash each existing local input path; non-paths (hub ids, aliases) are recorded as given."""
    out: dict[str, str] = {}
    for name, p in inputs.items():
        if p is None:
            continue
        path = Path(p)
        out[name] = sha256_path(path) if path.exists() else f"id:{p}"
    return out


def write_manifest(
    out_dir: str | os.PathLike,
    *,
    stage: str,
    config: Any = None,
    inputs: dict[str, str | os.PathLike | None] | None = None,
    counts: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    started_at: float | None = None,
) -> Path:
    """Write ``out_dir/manifest.json`` atomically. Call it after every other output is written."""
    cfg = config.model_dump(mode="json") if hasattr(config, "model_dump") else config
    chash = config.config_hash() if hasattr(config, "config_hash") else None
    now = time.time()
    body = {
        "stage": stage,
        "complete": True,
        "micota_version": __version__,
        "config_hash": chash,
        "config": cfg,
        "inputs": input_hashes(inputs or {}),
        "counts": counts or {},
        "finished_at": now,
        "wall_s": round(now - started_at, 3) if started_at else None,
        **(extra or {}),
    }
    return atomic_write_json(Path(out_dir) / MANIFEST, body)


def read_manifest(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return None
    return read_json(path)


def is_complete(out_dir: str | os.PathLike) -> bool:
    m = read_manifest(out_dir)
    return bool(m and m.get("complete"))


def write_empty_manifest(out_dir: str | os.PathLike, *, stage: str, config: Any = None, reason: str) -> Path:
    """Mark ``out_dir`` as a finished stage that produced nothing (``empty: true`` + the reason)."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return write_manifest(out_dir, stage=stage, config=config, extra={"empty": True, "empty_reason": reason})


def empty_reason(out_dir: str | os.PathLike) -> str | None:
    """The reason a finished stage output is empty, or None when it holds results."""
    m = read_manifest(out_dir)
    if m and m.get("complete") and m.get("empty"):
        return str(m.get("empty_reason") or "empty")
    return None
