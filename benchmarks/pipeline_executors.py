"""Pipeline executors side by side: the same pipeline run from scratch by each executor in one run.

``inprocess`` runs every stage in the runner's process; ``local`` (the default) starts one child
process per stage that loads a model (interpreter start, imports and model load paid per stage;
memory released after); ``slurm`` submits one job per stage (needs a reachable Slurm). For each
executor it prints wall seconds and CPU seconds (user+sys of the run and all its children: on a
shared machine CPU time is the figure that does not depend on the load), the ratio to the first
executor, the extra CPU per model stage, and whether results.json (minus its ``sources`` paths) is
identical across executors — the executor must not change the numbers.

Default pipeline: ``--stages`` generate stages (tiny Qwen2, 8 problems, 16 new tokens each) and a
report — short stages, where per-stage start-up shows most. ``--recipe`` runs a recipe instead.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pipeline_executors.py [--stages 6] [--executors inprocess,local]
        [--recipe recipes/miniature-quick.yaml] [--work /tmp/pipeline-executors]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def tiny_pipeline(work: Path, stages: int) -> Path:
    from micota.models.tiny import save_tiny

    model = work / "model"
    if not (model / "config.json").is_file():
        texts = ["What is 12 + 7? The answer is \\boxed{19}.", "0 1 2 3 4 5 6 7 8 9 + - * / = the answer is"] * 20
        save_tiny(model, texts, vocab_size=300)
    probs = work / "problems.jsonl"
    probs.write_text("".join(json.dumps({"id": f"q{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                             for i in range(8)))
    gens = {f"gen{k}": {"kind": "generate", "inputs": {"model": str(model), "problems": str(probs)},
                        "max_new_tokens": 16, "batch_size": 8, "seed": k} for k in range(stages)}
    spec = {"name": "executors-bench", "stages": {**gens, "report": {
        "kind": "report", "inputs": {"evals": {"long": "${gen0}", "mid": "${gen1}"}}, "baseline": "long", "method": "mid",
        "n_boot": 200}}}
    p = work / "pipeline.yaml"
    p.write_text(yaml.safe_dump(spec, sort_keys=False))
    return p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default=None)
    ap.add_argument("--stages", type=int, default=6)
    ap.add_argument("--executors", default="inprocess,local")
    ap.add_argument("--work", default="/tmp/pipeline-executors")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    pipeline = Path(args.recipe) if args.recipe else tiny_pipeline(work, args.stages)
    model_stages = None
    rows: dict[str, tuple[float, float]] = {}
    results: dict[str, dict] = {}
    for ex in args.executors.split(","):
        out = work / ex
        shutil.rmtree(out, ignore_errors=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "micota", "run", str(pipeline), "--out", str(out), "--executor", ex],
                           capture_output=True, text=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if r.returncode != 0:
            sys.exit(f"{ex}: micota run failed: {r.stderr.strip().splitlines()[-1:]}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        rows[ex] = (wall, cpu)
        res = json.loads((out / "results.json").read_text())
        res.pop("sources", None)
        results[ex] = res
        if ex == "local":
            model_stages = len(list((out / ".pipeline" / "logs").glob("*.log")))
        print(f"{ex:>10}: wall {wall:8.1f} s   cpu {cpu:8.1f} s", flush=True)
    first = next(iter(rows))
    for ex, (wall, cpu) in rows.items():
        print(f"{ex:>10} / {first}: wall {wall / rows[first][0]:.2f}x   cpu {cpu / rows[first][1]:.2f}x")
    if model_stages and "inprocess" in rows and "local" in rows:
        extra = rows["local"][1] - rows["inprocess"][1]
        print(f"local ran {model_stages} stages in child processes: +{extra / model_stages:.2f} CPU s per child stage")
    print(f"results.json identical across executors: {all(r == results[first] for r in results.values())}")
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
