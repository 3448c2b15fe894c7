"""Pipeline executors side by side: the same recipe run from scratch by each executor in one run.

``inprocess`` runs every stage in the runner's process; ``local`` (the default) starts one child
process per stage that loads a model (import + model load paid per stage, memory released after);
``slurm`` submits one job per stage (needs a reachable Slurm: ``SLURM_CONF`` or a login node).
Prints wall seconds per executor, the ratio to the first one, and whether results.json (minus its
``sources`` paths) is identical across executors — the executor must not change the numbers.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pipeline_executors.py [--recipe recipes/miniature-quick.yaml]
        [--executors inprocess,local] [--work /tmp/pipeline-executors]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default=str(REPO / "recipes" / "miniature-quick.yaml"))
    ap.add_argument("--executors", default="inprocess,local")
    ap.add_argument("--work", default="/tmp/pipeline-executors")
    args = ap.parse_args()
    work = Path(args.work)
    times: dict[str, float] = {}
    results: dict[str, dict] = {}
    for ex in args.executors.split(","):
        out = work / ex
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "micota", "run", args.recipe, "--out", str(out), "--executor", ex],
                           capture_output=True, text=True)
        times[ex] = time.perf_counter() - t0
        if r.returncode != 0:
            sys.exit(f"{ex}: micota run failed: {r.stderr.strip().splitlines()[-1:]}")
        res = json.loads((out / "results.json").read_text())
        res.pop("sources", None)
        results[ex] = res
        print(f"{ex:>10}: {times[ex]:8.1f} s", flush=True)
    first = next(iter(times))
    for ex, t in times.items():
        print(f"{ex:>10} / {first}: {t / times[first]:.2f}x")
    same = all(r == results[first] for r in results.values())
    print(f"results.json identical across executors: {same}")
    for ex, r in results.items():
        acc = {v: {s: b["accuracy"] for s, b in blk.items()} for v, blk in r.get("variants", {}).items()}
        print(f"{ex:>10} accuracies: {json.dumps(acc, sort_keys=True)}")


if __name__ == "__main__":
    main()
