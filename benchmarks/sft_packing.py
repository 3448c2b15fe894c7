"""SFT throughput: padded vs packed batches (bfd and wrapped) on a dataset with skewed lengths (goal: packed >= 1.5x).

Data: MATH problems with their reference solutions as completions (a long-tailed length
distribution, like CoT data). Model: a small random-init Qwen2 (default hidden 512, 2 layers) with a BPE
tokenizer trained on those texts, so the run is compute-bound rather than overhead-bound on CPU.
``packed`` is TRL's best-fit-decreasing packing (examples kept apart through a padding-free row: the
whole batch is one row, so without FlashAttention attention costs grow with (batch × max_length)²);
``wrapped`` concatenates the examples and cuts max_length rows (the world's bases are pretrained so).
All runs train one epoch over the same examples (the same real tokens) with the same settings;
tokens/s counts real (non-pad) tokens over the trainer's runtime. The loss after the same number
of tokens is reported as the dataset's BPC under each final model (``micota bpc``), plus each run's
last logged training loss.

    .venv/bin/python benchmarks/sft_packing.py [--n 96] [--max-length 1024] [--batch-size 8] [--packed-batch-size 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
from pathlib import Path

from micota.generation.prompts import build_messages
from micota.models.tiny import save_tiny
from micota.records import SftExample
from micota.scoring.bpc import BpcConfig, compute_bpc
from micota.training import TrainConfig, train

DATA = Path(os.environ.get("MICOTA_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")) / "train" / "math_train.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=8, help="padded: examples per batch; packed: sequences of max-length")
    ap.add_argument("--packed-batch-size", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rows = [json.loads(line) for line in DATA.open()]
    rows = [r for r in rows if r.get("solution")]
    random.Random(args.seed).shuffle(rows)
    rows = rows[:args.n]
    work = Path(tempfile.mkdtemp(prefix="sft_packing."))
    model = save_tiny(work / "init", [r["problem"] + "\n" + r["solution"] for r in rows[:2000]], vocab_size=2000,
                      hidden=args.hidden, layers=args.layers, heads=8, kv_heads=4, max_positions=args.max_length)
    ds = work / "ds"
    ds.mkdir()
    ds_rows = [SftExample(id=str(i), problem_id=r["id"], prompt=build_messages(r["problem"]),
                          completion=[{"role": "assistant", "content": r["solution"]}]) for i, r in enumerate(rows)]
    (ds / "data.jsonl").write_text("".join(x.model_dump_json() + "\n" for x in ds_rows))

    results = {}
    runs = (("padded", False, "bfd", args.batch_size), ("packed", True, "bfd", args.packed_batch_size),
            ("wrapped", True, "wrapped", args.packed_batch_size))
    for name, packing, strategy, bs in runs:
        out = train(TrainConfig(base=str(model), data=str(ds), out=str(work / name), lr=1e-3, epochs=1, batch_size=bs,
                                max_length=args.max_length, packing=packing, packing_strategy=strategy, save_checkpoints=False,
                                logging_steps=1, seed=args.seed))
        rep = json.loads((out / "train_report.json").read_text())
        bpc = compute_bpc(BpcConfig(model=str(out), data=str(ds), batch_size=16))
        results[name] = rep | {"bpc": bpc["bpc_char_weighted"], "tok_s": rep["tokens_per_epoch"] / rep["train_runtime_s"]}

    init_bpc = compute_bpc(BpcConfig(model=str(model), data=str(ds), batch_size=16))["bpc_char_weighted"]
    lengths = sorted(len(r["solution"]) for r in rows)
    p = results["padded"]
    print(f"model: random-init Qwen2 hidden={args.hidden} layers={args.layers} vocab=2000; padded batch={args.batch_size}, "
          f"packed batch={args.packed_batch_size} x {args.max_length} tokens")
    print(f"examples={p['examples_used']} (dropped over {args.max_length}: {p['dropped_too_long']}) real tokens/epoch={p['tokens_per_epoch']} "
          f"solution chars median={lengths[len(lengths) // 2]} max={lengths[-1]}")
    for name, r in results.items():
        print(f"{name:7s}: steps={r['steps']:3d} runtime={r['train_runtime_s']:7.2f} s  {r['tok_s']:7.0f} real tok/s  "
              f"last loss={r['loss_curve'][-1]['loss']:.3f}  BPC after 1 epoch={r['bpc']:.3f} (init {init_bpc:.3f})")
    print(f"speed-up packed/padded: {results['packed']['tok_s'] / results['padded']['tok_s']:.2f}x, "
          f"wrapped/padded: {results['wrapped']['tok_s'] / results['padded']['tok_s']:.2f}x, "
          f"wrapped/packed: {results['wrapped']['tok_s'] / results['packed']['tok_s']:.2f}x")


if __name__ == "__main__":
    main()
