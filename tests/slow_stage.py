"""A resumable stage kind for executor tests (``kind: slow_stage:count``): writes ``steps`` lines to
``out/steps.jsonl``, one every ``step_s`` seconds (append + fsync), skipping the steps a killed try
already wrote, then its manifest. Its time is deterministic and costs no CPU, so a test can let a
Slurm job reach its time limit mid-stage; ``resume_step_s`` (default ``step_s``) paces the steps of
a try that resumes, so the test need not wait out the rest at the first try's pace."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from micota.config import StageConfig
from micota.manifest import write_manifest


class CountConfig(StageConfig):
    out: Path
    steps: int = 10
    step_s: float = 1.0
    resume_step_s: float | None = None


def count(cfg: CountConfig) -> None:
    cfg.out.mkdir(parents=True, exist_ok=True)
    path = cfg.out / "steps.jsonl"
    done = len(path.read_text().splitlines()) if path.is_file() else 0
    pace = cfg.step_s if not done or cfg.resume_step_s is None else cfg.resume_step_s
    with open(path, "a") as f:
        for i in range(done, cfg.steps):
            time.sleep(pace)
            f.write(json.dumps({"step": i, "pid": os.getpid()}) + "\n")
            f.flush()
            os.fsync(f.fileno())
    write_manifest(cfg.out, stage="count", config=cfg, counts={"steps": cfg.steps, "this_try": cfg.steps - done})
