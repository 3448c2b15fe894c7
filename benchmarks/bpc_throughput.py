"""BPC scoring throughput: batched + length-sorted (what ``micota bpc`` does) vs a per-record loop.

Same model, same records (MATH problems with their reference solutions as completions, so lengths
are skewed like real CoT data), same tokenization. Prints records/s and tokens/s of both, the
speed-up ratio (goal >= 3x), and the largest per-record BPC difference between the two (should be
~0: batching must not change the numbers).

    .venv/bin/python benchmarks/bpc_throughput.py [--model smollm2-135m] [--n 64] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import torch

from micota.generation.prompts import build_messages, render_prompt
from micota.models import load_model, load_tokenizer
from micota.scoring.bpc import score_batch
from micota.training.data import encode_pair

DATA = Path(os.environ.get("MICOTA_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")) / "train" / "math_train.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-chars", type=int, default=2000, help="skip solutions longer than this (keeps the CPU run short)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rows = [json.loads(line) for line in DATA.open()]
    rows = [r for r in rows if r.get("solution") and len(r["solution"]) <= args.max_chars]
    random.Random(args.seed).shuffle(rows)
    rows = rows[:args.n]
    tok, model = load_tokenizer(args.model), load_model(args.model, dtype="float32")
    enc = [encode_pair(tok, render_prompt(tok, build_messages(r["problem"])), r["solution"]) for r in rows]
    tokens = sum(len(e.ids) for e in enc)
    pad = tok.pad_token_id
    score_batch(model, enc[:2], pad)  # warm-up

    t = time.perf_counter()
    loop = [score_batch(model, [e], pad)[0].nll_bits for e in enc]
    t_loop = time.perf_counter() - t

    t = time.perf_counter()
    order = sorted(range(len(enc)), key=lambda i: -len(enc[i].ids))
    batched = [0.0] * len(enc)
    for s in range(0, len(order), args.batch_size):
        idx = order[s:s + args.batch_size]
        for i, b in zip(idx, score_batch(model, [enc[i] for i in idx], pad)):
            batched[i] = b.nll_bits
    t_batch = time.perf_counter() - t

    chars = [len(r["solution"]) for r in rows]
    diff = max(abs(a - b) / c for a, b, c in zip(loop, batched, chars))
    print(f"model={args.model} records={len(enc)} tokens={tokens} (mean {tokens / len(enc):.0f}, max {max(len(e.ids) for e in enc)}) "
          f"threads={torch.get_num_threads()} device={next(model.parameters()).device}")
    print(f"per-record loop : {t_loop:7.2f} s  {len(enc) / t_loop:6.2f} rec/s  {tokens / t_loop:8.0f} tok/s")
    print(f"batched (bs={args.batch_size:>2}) : {t_batch:7.2f} s  {len(enc) / t_batch:6.2f} rec/s  {tokens / t_batch:8.0f} tok/s")
    print(f"speed-up        : {t_loop / t_batch:.2f}x   max |BPC difference| = {diff:.2e}")


if __name__ == "__main__":
    main()
