"""The one rerun rule every command follows when its output directory already exists.

- a complete output made with the same config → skipped, and a line on stderr says so;
- a complete output made with a different config → :class:`UserError` naming the changed keys as
  flags (``--max-new-tokens 1024 → 256``), unless ``--overwrite`` (then it is replaced);
- an unfinished output → the stage resumes it (generate, eval, train) — only stages that resume
  pass ``resumable=True``; anything else that is not a finished output of this stage is an error.

Keys in ``ignore`` (where the output goes, scheduling) never count as a change; keys in ``extend``
(``--limit``, ``--benchmarks``) let a resumable stage extend a finished output instead.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any, Iterable

from micota.errors import UserError
from micota.manifest import read_manifest

ALWAYS_IGNORED = frozenset({"out", "overwrite"})


def flag_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def config_changes(old: dict[str, Any], new: dict[str, Any], ignore: Iterable[str] = ()) -> list[str]:
    """Top-level keys whose values differ, sorted; keys in ``ignore`` are skipped."""
    skip = ALWAYS_IGNORED | set(ignore)
    return sorted(k for k in set(old) | set(new) if k not in skip and old.get(k) != new.get(k))


def describe_changes(old: dict[str, Any], new: dict[str, Any], keys: list[str], *, limit: int = 4) -> str:
    """``--max-new-tokens 1024 → 256, --temperature 0.0 → 0.7`` (long values shortened)."""
    def short(v: Any) -> str:
        s = "unset" if v is None else str(v)
        return s if len(s) <= 40 else s[:37] + "..."
    parts = [f"{flag_name(k)} {short(old.get(k))} → {short(new.get(k))}" for k in keys[:limit]]
    if len(keys) > limit:
        parts.append(f"and {len(keys) - limit} more")
    return ", ".join(parts)


def _has_samples(out: Path) -> bool:
    return any(out.glob("samples-*.jsonl")) or any(out.glob("*/samples-*.jsonl")) or any(out.glob("tasks/*/samples-*.jsonl"))


def check_rerun(out: str | Path | None, config: Any, *, stage: str, overwrite: bool = False,
                resumable: bool = False, ignore: Iterable[str] = (), extend: Iterable[str] = ()) -> bool:
    """Apply the rule to ``out`` before running ``stage``; True means "already done: skip it".

    With ``overwrite`` a finished output of this stage (or an unfinished samples directory) is
    removed so the stage starts afresh. Never removes a directory that is not a micota output."""
    if out is None:
        return False
    out = Path(out)
    if not out.exists():
        return False
    if not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory; choose another --out")
    man = read_manifest(out)
    if man is None:
        if resumable and not overwrite:
            return False  # the stage resumes what is there (and checks it was made with this config)
        if overwrite and (resumable and _has_samples(out) or not any(out.iterdir())):
            shutil.rmtree(out)
            return False
        if not any(out.iterdir()):
            out.rmdir()
            return False
        raise UserError(f"{out}: exists but is not a finished micota {stage} output (no manifest.json); "
                        "choose another --out or remove it")
    if man.get("stage") != stage:
        raise UserError(f"{out}: holds a {man.get('stage')!r} output, not {stage}; choose another --out")
    new = config.model_dump(mode="json") if hasattr(config, "model_dump") else dict(config)
    old = man.get("config") or {}
    changed = config_changes(old, new, ignore)
    if overwrite:
        shutil.rmtree(out)
        return False
    if not man.get("complete"):
        return False
    if not changed:
        print(f"{out}: already complete with the same config — skipped (pass --overwrite to recompute)",
              file=sys.stderr, flush=True)
        return True
    if resumable and set(changed) <= set(extend):
        return False  # e.g. a larger --limit: the stage extends the finished output
    raise UserError(f"{out}: finished with a different config ({describe_changes(old, new, changed)}); "
                    "pass --overwrite to replace it or choose another --out")
