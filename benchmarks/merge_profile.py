"""Where the fast merge's time goes, part by part, beside the I/O floor (the same pair as
``merge_vs_mergekit.py``): each part alone, one thread, wall and CPU seconds (medians of ``--reps``).

    .venv/bin/python benchmarks/merge_profile.py [--reps 3] [--quick] [--workdir DIR] [--methods dare_ties,ties]

Parts: interpreter + imports of ``python -m micota merge`` (``import micota.cli``); mapping and touching
both inputs (the page cache, no copy); sha256 of both inputs (the manifest's provenance: computed, and
looked up in the digest cache, ``micota.io.sha256_file``); the block
arithmetic of every tensor (``fast.merge_tensor`` with the output discarded; for ties also its steps:
sample, bracket, pass 1, threshold, pass 2); writing the output size (real bytes) and ``fsync``; the
I/O floor as a process. The parts add up to the work of one core; the merge runs them on ``threads``
workers + hashing threads, so on an idle 2-core machine its wall time lies between the largest part and
the sum over two.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from merge_vs_mergekit import IO_FLOOR, PY, make_pair_once, pair_args, run  # noqa: E402


def timed(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def main() -> None:
    args = pair_args().parse_args()

    import numpy as np

    from micota.merging import fast
    from micota.merging.config import from_mergekit_yaml
    from micota.io import sha256_file

    work = Path(args.workdir or tempfile.mkdtemp(prefix="merge-bench-"))
    os.environ["MICOTA_CACHE"] = str(work / "cache")  # the kernel and the digests: as merge_vs_mergekit.py
    base, ft, shape = make_pair_once(work, args.quick)
    files = sorted(base.glob("*.safetensors")) + sorted(ft.glob("*.safetensors"))
    size = sum(f.stat().st_size for f in files) // 2
    print(f"pair: {size / 1e9:.2f} GB per model, shape {shape}; load average at start "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    parts: dict[str, list[tuple[float, float]]] = {}

    def add(name: str, wc: tuple[float, float]) -> None:
        parts.setdefault(name, []).append(wc)

    def touch() -> None:
        inputs = fast._Inputs(files)
        for f, mm in inputs.maps.items():
            a = np.frombuffer(mm, np.uint8)
            for off in range(0, a.size, 1 << 26):
                int(a[off:off + (1 << 26):4096].sum())
                mm.madvise(__import__("mmap").MADV_DONTNEED, off, min(1 << 26, a.size - off))
            del a
        inputs.close()

    def write_fsync(writeback: int | None) -> None:
        """The output's size in 256 KiB blocks through ShardedWriter, then its fsync (finish)."""
        from micota.merging.tensorio import ShardedWriter

        block = np.random.default_rng(0).integers(0, 1 << 16, 1 << 17, dtype=np.uint16)  # real bytes, not the zero page
        n = size // 2
        folder = work / "profile-out"
        subprocess.run(["rm", "-rf", str(folder)], check=True)
        folder.mkdir()
        w = ShardedWriter(folder, [("x", "BF16", (n,))], size + 1, writeback=writeback)
        for s in range(0, n, block.size):
            w.write("x", block[: min(block.size, n - s)], byte_offset=2 * s)
        w.finish()
        subprocess.run(["rm", "-rf", str(folder)], check=True)

    def arithmetic(method: str) -> None:
        """Every tensor through fast.merge_tensor; for TIES also its parts (thread CPU time of each step)."""
        cfg_path = work / f"{method}.yaml"
        cfg_path.write_text(f"merge_method: {method}\nbase_model: {base}\nmodels:\n  - model: {ft}\n"
                            "    parameters: {weight: 0.5, density: 0.5}\ndtype: bfloat16\n")
        plan = fast.plan_fast(from_mergekit_yaml(cfg_path, out=work / "unused", seed=0))
        inputs = fast._Inputs(plan.files)
        steps = {"sample": (fast._Source, "sample_keys"), "bracket from the sample": (fast, "_bracket"),
                 "pass 1 (sums, bracket counts and candidates)": (fast._Source, "stats"),
                 "threshold from the candidates": (fast, "_topk_threshold")}
        spent = dict.fromkeys(steps, 0.0)
        saved = {k: getattr(o, a) for k, (o, a) in steps.items()}

        def timing(key: str, fn):  # noqa: ANN001, ANN202
            def wrapped(*a, **kw):  # noqa: ANN002, ANN003, ANN202
                c = time.thread_time()
                try:
                    return fn(*a, **kw)
                finally:
                    spent[key] += time.thread_time() - c
            return wrapped
        for k, (o, a) in steps.items():
            setattr(o, a, timing(k, saved[k]))
        c0 = time.thread_time()
        try:
            for t in plan.tensors:
                fast.merge_tensor(t, 0, method, fast._Source(t, (inputs.view(t.b), inputs.view(t.f)), inputs),
                                  lambda s, blk: None)
                inputs.drop(t.b)
                inputs.drop(t.f)
        finally:
            for k, (o, a) in steps.items():
                setattr(o, a, saved[k])
            inputs.close()
        if method == "ties":
            for k, v in spent.items():
                add(f"  ties: {k}", (v, v))
            add("  ties: pass 2 and the rest", (time.thread_time() - c0 - sum(spent.values()),) * 2)

    for _ in range(args.reps):
        w, _, c = run([PY, "-c", "pass"])
        w2, _, c2 = run([PY, "-c", "import micota.cli"], {"PYTHONPATH": os.environ.get("PYTHONPATH", "")})
        add("imports (python -c 'import micota.cli' minus 'pass')", (w2 - w, c2 - c))
        add("map + touch both inputs", timed(touch))
        os.environ["MICOTA_HASH_CACHE"] = "off"  # the digest itself (a new pair's first merge)
        add("sha256 of both inputs (one thread, digest cache off)", timed(lambda: [sha256_file(f) for f in files]))
        del os.environ["MICOTA_HASH_CACHE"]
        [sha256_file(f) for f in files]  # fill the cache (a no-op when it has them)
        add("sha256 of both inputs from the digest cache", timed(lambda: [sha256_file(f) for f in files]))
        for m in args.methods.split(","):
            parts.setdefault(f"arithmetic, {m} (one thread, output discarded)", [])  # its row before its parts'
            add(f"arithmetic, {m} (one thread, output discarded)", timed(lambda m=m: arithmetic(m)))
        add("write the output size, then fsync", timed(lambda: write_fsync(None)))
        add(f"the same with background fdatasync every {fast.WRITEBACK >> 20} MiB (the merge's writer)",
            timed(lambda: write_fsync(fast.WRITEBACK)))
        out = work / "profile-floor"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        w, _, c = run([PY, "-c", IO_FLOOR, str(base), str(ft), str(out)])
        add("I/O floor process (read both, write one, fsync)", (w, c))
        subprocess.run(["rm", "-rf", str(out)], check=True)
    floor = statistics.median(x[0] for x in parts["I/O floor process (read both, write one, fsync)"])
    print(f"load average at end {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"\n| part | wall s (median of {args.reps}) | CPU s | wall / I/O floor |\n|---|---:|---:|---:|")
    for name, v in parts.items():
        w, c = statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)
        print(f"| {name} | {w:.2f} | {c:.2f} | {w / floor:.2f} |")


if __name__ == "__main__":
    main()
