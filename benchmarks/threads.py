"""Thread defaults of the ``micota`` command: torch's own default vs the candidates, idle and busy.

Runs the real CLI as subprocesses — ``micota eval`` (SmolLM2-135M, GSM8K, greedy) and
``micota train`` (SmolLM2-135M, full fine-tune, a few steps) — under each thread setting, once on
the machine as it is ("idle": nothing of ours beside it) and once beside a second busy process (a
torch matmul loop using torch's default threads, i.e. another job on the same cores). Per run it
prints wall seconds, CPU seconds (user+sys of the run and its children) and the 1-minute load
average before and after, then each setting's wall time relative to torch's default.

Settings (environment of the run):

- ``torch-default``: ``MICOTA_THREADS=torch`` — torch picks its threads (one per core), OpenMP's
  default wait policy: micota's behaviour before the thread default existed;
- ``1-thread``: ``OMP_NUM_THREADS=1``;
- ``passive``: torch's threads with ``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep, not spin);
- ``micota-default``: nothing set — whatever :func:`micota.cli.apply_thread_defaults` chooses.

    .venv/bin/python benchmarks/threads.py [--limit 4] [--max-new-tokens 48] [--train-steps 4] [--only eval]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = {
    "torch-default": {"MICOTA_THREADS": "torch"},
    "1-thread": {"OMP_NUM_THREADS": "1"},
    "passive": {"MICOTA_THREADS": "torch", "OMP_WAIT_POLICY": "PASSIVE"},
    "micota-default": {},
}
BUSY = "import torch\na = torch.randn(384, 384)\nwhile True:\n    a = (a @ a).tanh()\n"


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "MICOTA_THREADS")}
    env.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra})
    return env


def timed_run(argv: list[str], env: dict[str, str], timeout: float) -> dict:
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=timeout)
        status = "ok" if proc.returncode == 0 else f"rc {proc.returncode}: {err.strip().splitlines()[-1:]}"
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        status = f"timeout {timeout:.0f} s"
    wall = time.perf_counter() - t0
    return {"wall_s": round(wall, 1), "status": status, "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2)}


def cpu_seconds_of(fn):
    """Run fn(); return its result and the CPU seconds its (waited-for) children used."""
    r0 = os.times()
    out = fn()
    r1 = os.times()
    out["cpu_s"] = round((r1.children_user - r0.children_user) + (r1.children_system - r0.children_system), 1)
    return out


def sft_data(path: Path, data_dir: str | None, n: int) -> Path:
    from micota.data.benchmarks import load_problems
    from micota.records import SftExample

    rows = [SftExample(id=p.id, problem_id=p.id, prompt=[{"role": "user", "content": p.problem}],
                       completion=[{"role": "assistant", "content": f"The answer is \\boxed{{{p.answer}}}."}])
            for p in load_problems("gsm8k", data_dir=data_dir, limit=n)]
    path.write_text("".join(r.model_dump_json() + "\n" for r in rows))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--limit", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--train-steps", type=int, default=4)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--only", choices=["eval", "train"], default=None)
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--timeout", type=float, default=400)
    ap.add_argument("--json", default=None, help="Also write the rows to this JSON file.")
    args = ap.parse_args()
    settings = [s for s in args.settings.split(",") if s]

    tmp = Path(tempfile.mkdtemp(prefix="micota-threads-"))
    data = sft_data(tmp / "sft.jsonl", args.data_dir, 16)
    dd = ["--data-dir", args.data_dir] if args.data_dir else []
    micota = [sys.executable, "-m", "micota"]
    workloads = {
        "eval": lambda out: [*micota, "eval", args.model, "--benchmarks", "gsm8k", "--limit", str(args.limit),
                             "--max-new-tokens", str(args.max_new_tokens), "--batch-size", str(args.limit), *dd, "--out", out],
        "train": lambda out: [*micota, "train", args.model, "--data", str(data), "--max-steps", str(args.train_steps),
                              "--batch-size", "2", "--max-length", "256", "--no-save-checkpoints",
                              "--logging-steps", "1", "--out", out],
    }
    if args.only:
        workloads = {args.only: workloads[args.only]}
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    rows = []
    for condition in ("idle", "busy"):
        busy = None
        if condition == "busy":
            busy = subprocess.Popen([sys.executable, "-c", BUSY], env=_clean_env({}))
            time.sleep(5)
        try:
            for wname, argv_of in workloads.items():
                for sname in settings:
                    out = tmp / f"{condition}-{wname}-{sname}"
                    r = cpu_seconds_of(lambda: timed_run(argv_of(str(out)), _clean_env(SETTINGS[sname]), args.timeout))
                    r.update(condition=condition, workload=wname, setting=sname)
                    rows.append(r)
                    print(json.dumps(r), flush=True)
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
    print("\n| workload | condition | setting | wall s | CPU s | load 1m before→after | ×torch-default wall | status |")
    print("|---|---|---|---:|---:|---|---:|---|")
    for r in rows:
        ref = next(x for x in rows if x["workload"] == r["workload"] and x["condition"] == r["condition"]
                   and x["setting"] == rows[0]["setting"])
        ratio = r["wall_s"] / ref["wall_s"] if ref["wall_s"] else float("nan")
        print(f"| {r['workload']} | {r['condition']} | {r['setting']} | {r['wall_s']} | {r['cpu_s']} | "
              f"{r['load_before']}→{r['load_after']} | {ratio:.2f} | {r['status']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
