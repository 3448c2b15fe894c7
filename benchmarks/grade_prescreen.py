"""Grading throughput with pathological answers: clean input vs 1% pathological, with the parent's
cheap pre-screen (what ``micota grade`` does) and without it (every item goes to a worker and a
pathological one costs a full timeout).

Clean items are MATH-500 reference answers boxed in a short completion (graded against themselves:
all must match). Pathological items are the probes of issue 14: ``10^{10^{10}}``, ``(10^{10})!``,
``9^{(9^{9})}``, a 5 MB completion and 100k nested braces. Prints items/s for each way and the
ratio to clean input (goal: within 2x at 1% pathological, with the pre-screen).

    .venv/bin/python benchmarks/grade_prescreen.py [--items 2000] [--bad-rate 0.01] [--workers 2] [--timeout 5]
"""

from __future__ import annotations

import argparse
import platform
import random
import time

import micota.grading as grading
from micota.data.benchmarks import load_benchmark
from micota.grading import GradeResult, grade_batch
from micota.grading.pool import POOL

BAD = ["Let me compute. \\boxed{10^{10^{10}}}", "\\boxed{(10^{10})!}", "So \\boxed{9^{(9^{9})}}",
       "x" * 5_000_000 + " \\boxed{1}", "{" * 100_000 + "}" * 100_000]


def items(n: int, bad_rate: float, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    answers = [p.answer for p in load_benchmark("math500")]
    out = [(f"The steps are short. The answer is \\boxed{{{a}}}.", a) for a in (rng.choice(answers) for _ in range(n))]
    for k, i in enumerate(rng.sample(range(n), round(n * bad_rate))):
        out[i] = (BAD[k % len(BAD)], "5")
    return out


def run(pairs, *, workers: int, timeout: float, prescreen: bool) -> tuple[float, list[GradeResult]]:
    saved = grading.too_costly
    if not prescreen:
        grading.too_costly = lambda completion: None  # every item goes to a worker
    try:
        t = time.perf_counter()
        res = grade_batch(pairs, workers=workers, timeout=timeout)
        return time.perf_counter() - t, res
    finally:
        grading.too_costly = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--bad-rate", type=float, default=0.01)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--skip-unscreened", action="store_true", help="skip the (slow) run without the pre-screen")
    args = ap.parse_args()
    clean, dirty = items(args.items, 0.0), items(args.items, args.bad_rate)
    grade_batch(clean[:args.workers * 4], workers=args.workers)  # start and warm the workers
    t_clean, r_clean = run(clean, workers=args.workers, timeout=args.timeout, prescreen=True)
    t_dirty, r_dirty = run(dirty, workers=args.workers, timeout=args.timeout, prescreen=True)
    rows = [("clean", t_clean, r_clean), (f"{args.bad_rate:.1%} pathological, pre-screen", t_dirty, r_dirty)]
    if not args.skip_unscreened:
        t_raw, r_raw = run(dirty, workers=args.workers, timeout=args.timeout, prescreen=False)
        rows.append((f"{args.bad_rate:.1%} pathological, no pre-screen", t_raw, r_raw))
    POOL.shutdown()
    print(f"machine: {platform.processor() or platform.machine()}, {args.workers} workers, {args.items} items, timeout {args.timeout}s")
    print(f"{'input':<36} {'items/s':>9} {'vs clean':>9}  reasons")
    for name, t, res in rows:
        reasons: dict[str, int] = {}
        for r in res:
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
        print(f"{name:<36} {len(res) / t:>9.1f} {t / t_clean:>8.2f}x  {dict(sorted(reasons.items()))}")
    wrong = sum(not r.correct for r in r_clean)
    if wrong:  # only timeouts on an overloaded machine can do this
        print(f"note: {wrong} clean items graded wrong (reasons above): the machine is overloaded")


if __name__ == "__main__":
    main()
