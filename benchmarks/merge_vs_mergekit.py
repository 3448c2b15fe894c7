"""micota merge vs mergekit-yaml (0.1.5) on a Qwen2.5-0.5B-shaped random bf16 pair.

Each contender runs as a whole process on the same files; wall time and peak RSS of the process
tree come from ``wait4`` (``ru_maxrss``). The I/O floor reads both inputs and writes one output of
the same size (the base's bytes), then fsyncs. Before every process the previous output is removed,
``sync`` runs and the inputs are read once, so each starts with the inputs in the page cache and no
write-back left over from another (:func:`settle`). Prints medians and ratios for dare_ties and ties,
each rep's micota / floor ratio, and the load average at start and end (wall seconds depend on the
load; CPU seconds, user + system, much less, though memory-bound work slows beside other processes).

    .venv/bin/python benchmarks/merge_vs_mergekit.py [--reps 3] [--quick] [--workdir DIR]
        [--methods dare_ties,ties] [--contenders micota,mergekit,mergekit-j1,io-floor]
        [--baseline-src OTHER_CHECKOUT/src]   # adds "micota-baseline": the same command on other sources
    # contender io-floor-zeros: the floor before 2026-11-27 19:00 (16 MiB reads, writes zeros), for comparison

micota runs with its own cache (``WORKDIR/cache``: the compiled kernel, the inputs' digests). Contender
``micota`` finds the pair's sha256 there (hashed once before the runs: every merge of a pair already
hashed — a merge search's points after the first, a rerun); ``micota-cold`` starts each run with the digest
cache emptied (the first merge of a new pair: the inputs are hashed beside the merge).

``--quick`` uses a 4-layer, 32k-vocabulary shape (a smoke run; report the default figures).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
BIN = Path(PY).parent

# The floor (one process, one thread): read both inputs through one reused L2-sized buffer (the cheapest
# read measured here: a 16 MiB buffer costs ~1.5x the CPU, its copies go to DRAM), write the base's bytes as
# the output (real data of the output's size: before 2026-11-27 19:00 it wrote zeros from `bytes(16 MiB)`,
# the shared zero page, a cache-hot source no merge has), then fsync.
IO_FLOOR = r"""
import os, sys, pathlib
src = [pathlib.Path(p) for p in sys.argv[1:3]]; out = pathlib.Path(sys.argv[3]); out.mkdir()
buf = bytearray(1 << 18); view = memoryview(buf)
fd = os.open(out / "model.safetensors", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
for i, folder in enumerate(src):
    for f in sorted(folder.glob("*.safetensors")):
        with open(f, "rb", buffering=0) as fh:
            while n := fh.readinto(buf):
                if i == 0:
                    os.write(fd, view[:n])
os.fsync(fd); os.close(fd)
"""

IO_FLOOR_ZEROS = r"""
import os, sys, pathlib
src = [pathlib.Path(p) for p in sys.argv[1:3]]; out = pathlib.Path(sys.argv[3]); out.mkdir()
total = 0; buf = bytearray(1 << 24)
for folder in src:
    for f in sorted(folder.glob("*.safetensors")):
        with open(f, "rb", buffering=0) as fh:
            while n := fh.readinto(buf):
                total += n
with open(out / "model.safetensors", "wb") as fh:
    block = bytes(1 << 24); left = total // 2
    while left > 0:
        left -= fh.write(block[: min(left, len(block))])
    fh.flush(); os.fsync(fh.fileno())
"""


def settle(out: Path, inputs: list[Path]) -> None:
    """The same start for every contender: the previous output removed and its dirty pages or pending
    write-back gone (``sync``; mergekit does not fsync), and every input byte in the page cache (read once
    through a small buffer; without it a contender after a cache drop reads from disk)."""
    shutil.rmtree(out, ignore_errors=True)
    os.sync()
    buf = bytearray(1 << 18)
    for f in inputs:
        with open(f, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass


def run(cmd: list[str], env: dict | None = None) -> tuple[float, int, float]:
    """(wall seconds, peak RSS bytes, CPU seconds user + system) of one whole process (and its children)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{err[-2000:]}")
    return wall, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime


def make_pair_once(work: Path, quick: bool) -> tuple[Path, Path, str]:
    """The benchmark pair in ``work`` (generated once): (base, fine-tune, shape)."""
    shape = "dict(QWEN25_05B, layers=4, vocab=32000)" if quick else "QWEN25_05B"
    if not (work / "base" / "config.json").is_file():
        # generated in a child so this (forking) parent stays small and does not inflate children's RSS
        t = time.perf_counter()
        subprocess.run([PY, "-c", "from micota.merging.synth import QWEN25_05B, make_pair; "
                        f"make_pair({str(work)!r}, arch='qwen2', dtype='bfloat16', noise=0.002, **{shape})"], check=True)
        print(f"generated pair in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    return work / "base", work / "ft0", shape


def pair_args() -> argparse.ArgumentParser:
    """The options every benchmark on this pair takes (also merge_profile.py)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--methods", default="dare_ties,ties")
    return ap


def main() -> None:
    ap = pair_args()
    ap.add_argument("--contenders", default="micota,micota-cold,mergekit,mergekit-j1,io-floor",
                    help="subset to run (mergekit = its defaults; mergekit-j1 = -j 1 --out-shard-size 100M)")
    ap.add_argument("--baseline-src", default=None,
                    help="another checkout's src/ to run as contender micota-baseline (e.g. main before a change)")
    args = ap.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="merge-bench-"))
    base, ft, shape = make_pair_once(work, args.quick)
    size = sum(f.stat().st_size for f in base.glob("*.safetensors"))
    inputs = sorted(base.glob("*.safetensors")) + sorted(ft.glob("*.safetensors"))
    print(f"pair: {size / 1e9:.2f} GB per model, shape {shape}; {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load "
          f"average at start {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")

    cache = work / "cache"
    env = {"HF_HUB_OFFLINE": "1", "MICOTA_CACHE": str(cache)}
    # the kernel's one-time build (first use) is not part of a run; the pair is hashed once (contender micota)
    subprocess.run([PY, "-c", "import sys; from micota.merging import kernel; from micota.io import sha256_file; "
                    "kernel.lib(); [sha256_file(f) for f in sys.argv[1:]]", *map(str, inputs)],
                   check=True, env={**os.environ, **env})
    params = {"dare_ties": "weight: 0.5, density: 0.5", "ties": "weight: 0.5, density: 0.5"}
    results: dict[str, dict[str, list[tuple[float, int, float]]]] = {}
    for method in args.methods.split(","):
        cfg = work / f"{method}.yaml"
        cfg.write_text(f"merge_method: {method}\nbase_model: {base}\nmodels:\n  - model: {ft}\n"
                       f"    parameters: {{{params[method]}}}\ndtype: bfloat16\n")
        contenders = {
            "micota": [PY, "-m", "micota", "merge", str(cfg), "--out", "{out}", "--seed", "0"],
            "micota-cold": [PY, "-m", "micota", "merge", str(cfg), "--out", "{out}", "--seed", "0"],
            "mergekit": [str(BIN / "mergekit-yaml"), str(cfg), "{out}", "--random-seed", "0", "--no-write-model-card",
                         "--quiet"],
            "mergekit-j1": [str(BIN / "mergekit-yaml"), str(cfg), "{out}", "--random-seed", "0", "-j", "1",
                                  "--out-shard-size", "100M", "--no-write-model-card", "--quiet"],
            "io-floor": [PY, "-c", IO_FLOOR, str(base), str(ft), "{out}"],
            "io-floor-zeros": [PY, "-c", IO_FLOOR_ZEROS, str(base), str(ft), "{out}"],
        }
        contenders = {k: v for k, v in contenders.items() if k in args.contenders.split(",")}
        if args.baseline_src:
            contenders["micota-baseline"] = contenders.get("micota") or [
                PY, "-m", "micota", "merge", str(cfg), "--out", "{out}", "--seed", "0"]
        results[method] = {k: [] for k in contenders}
        for rep in range(args.reps):
            for name, cmd in contenders.items():
                out = work / "out"
                settle(out, inputs)
                if name == "micota-cold":
                    shutil.rmtree(cache / "sha256", ignore_errors=True)
                extra = {"PYTHONPATH": args.baseline_src} if name == "micota-baseline" else {}
                wall, rss, cpu = run([c.replace("{out}", str(out)) for c in cmd], {**env, **extra})
                results[method][name].append((wall, rss, cpu))
                print(f"{method:10s} rep {rep} {name:18s} {wall:7.2f} s wall {cpu:7.2f} s cpu {rss / 2**20:7.0f} MiB",
                      file=sys.stderr, flush=True)
        shutil.rmtree(work / "out", ignore_errors=True)

    print(f"{time.strftime('%H:%M:%S %Z')}, load average at end {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"\n| method | contender | wall s (median of {args.reps}) | CPU s (median) | peak RSS MiB (max) |")
    print("|---|---|---|---|---|")
    for method, by in results.items():
        med = {k: (statistics.median(x[0] for x in v), max(x[1] for x in v), statistics.median(x[2] for x in v))
               for k, v in by.items()}
        for k, (w, r, c) in med.items():
            print(f"| {method} | {k} | {w:.2f} | {c:.2f} | {r / 2**20:.0f} |")
        mk = [med[k] for k in ("mergekit", "mergekit-j1") if k in med]
        if not {"micota", "micota-cold"} & med.keys() or not mk or "io-floor" not in med:
            continue
        best_mk, low_rss, best_cpu = min(x[0] for x in mk), min(x[1] for x in mk), min(x[2] for x in mk)
        floor = med["io-floor"]
        if "micota-baseline" in med and "micota" in med:
            m = med["micota"]
            print(f"| {method} | **vs baseline** | wall: baseline/micota = {med['micota-baseline'][0] / m[0]:.2f}x | "
                  f"CPU: baseline/micota = {med['micota-baseline'][2] / m[2]:.2f}x | |")
        for k in ("micota", "micota-cold"):
            if k in med:
                m = med[k]
                print(f"| {method} | **ratios {k}** | wall: mergekit-best/{k} = {best_mk / m[0]:.2f}x (goal >= 3), "
                      f"{k}/io-floor = {m[0] / floor[0]:.2f}x (goal <= 1.5) | CPU: mergekit-best/{k} = "
                      f"{best_cpu / m[2]:.2f}x, {k}/io-floor = {m[2] / floor[2]:.2f}x | {k}/mergekit-lowest = "
                      f"{m[1] / low_rss:.2f} (goal <= 0.33) |")
    for method, by in results.items():  # each rep's micota beside the floor run in the same rep (drift cancels)
        for k in ("micota", "micota-cold"):
            if k in by and "io-floor" in by:
                pairs = [a[0] / b[0] for a, b in zip(by[k], by["io-floor"])]
                print(f"{method}: {k}/io-floor wall, rep by rep: {' '.join(f'{r:.2f}' for r in pairs)} "
                      f"(median {statistics.median(pairs):.2f}x)")


if __name__ == "__main__":
    main()
