"""Generation throughput of the ``hf`` backend: batched (left-padded, length-sorted; what
``micota eval``/``generate`` do) vs one prompt at a time, and bf16 vs fp32.

Same model, same GSM8K prompts (rendered with the chat template and the eval instruction), greedy,
same ``max_new_tokens``. Prints generated tokens/s of each way, the batched/single ratio (goal
>= 4x at batch 8 on CPU), the bf16/fp32 ratio, and how many greedy completions are identical
between the ways (padding and bf16 may flip near-ties; fp32 batched vs single should all match).

    .venv/bin/python benchmarks/eval_throughput.py [--model smollm2-135m] [--prompts 8] [--batch-size 8] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from micota.data.benchmarks import load_benchmark
from micota.generation.backends import HFBackend, SamplingParams
from micota.generation.prompts import build_messages, render_prompt
from micota.models import load_model, load_tokenizer


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--skip-bf16", action="store_true")
    args = ap.parse_args()

    tok = load_tokenizer(args.model)
    problems = load_benchmark("gsm8k", data_dir=args.data_dir, limit=args.prompts)
    prompts = [render_prompt(tok, build_messages(p.problem)) for p in problems]
    params = SamplingParams(max_new_tokens=args.max_new_tokens)
    rows = []

    fp32 = HFBackend(args.model, model_obj=load_model(args.model, dtype="float32"), tokenizer=tok, batch_size=args.batch_size)
    fp32.generate(prompts[:1], SamplingParams(max_new_tokens=2))  # warm-up
    single, t_single = timed(lambda: [fp32.generate([p], params)[0] for p in prompts])
    batched, t_batched = timed(lambda: fp32.generate(prompts, params))
    rows += [("fp32, one prompt at a time", single, t_single), (f"fp32, batched (batch {args.batch_size})", batched, t_batched)]
    if not args.skip_bf16:
        bf16 = HFBackend(args.model, model_obj=load_model(args.model, dtype="bfloat16"), tokenizer=tok, batch_size=args.batch_size)
        bf16.generate(prompts[:1], SamplingParams(max_new_tokens=2))
        bf, t_bf = timed(lambda: bf16.generate(prompts, params))
        rows.append((f"bf16, batched (batch {args.batch_size})", bf, t_bf))

    def tps(out, t):
        return sum(c[0].completion_tokens for c in out) / t

    print(f"model {args.model}, {len(prompts)} GSM8K prompts, max_new_tokens {args.max_new_tokens}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"{'way':<32} {'tokens':>7} {'seconds':>8} {'tokens/s':>9}")
    for name, out, t in rows:
        print(f"{name:<32} {sum(c[0].completion_tokens for c in out):>7} {t:>8.2f} {tps(out, t):>9.2f}")
    same = sum(a[0].text == b[0].text for a, b in zip(single, batched))
    print(f"batched / one-at-a-time tokens/s: {tps(batched, t_batched) / tps(single, t_single):.2f}x "
          f"(identical greedy completions: {same}/{len(prompts)})")
    if not args.skip_bf16:
        same_bf = sum(a[0].text == b[0].text for a, b in zip(batched, bf))
        print(f"bf16 / fp32 batched tokens/s: {tps(bf, t_bf) / tps(batched, t_batched):.2f}x "
              f"(identical greedy completions: {same_bf}/{len(prompts)})")


if __name__ == "__main__":
    main()
