"""Peak memory of BPC scoring: chunked logits (what ``micota bpc`` does) vs the whole sequence at once.

A one-layer Qwen2 with Qwen2.5's vocabulary (V = 152,064) scores one long record in a fresh
subprocess per way; the peak RSS growth during scoring (``VmHWM`` after resetting it through
``/proc/self/clear_refs``) is printed with the ratio, and the summed bits of both ways (they must
agree). Then the paper-scale estimate for the 7B recipe (Qwen2.5-7B, 16,384 tokens, batch 4).

    .venv/bin/python benchmarks/bpc_memory.py [--vocab 152064] [--tokens 2048] [--chunk 256]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, sys, torch
from transformers import Qwen2Config, Qwen2ForCausalLM
from micota.scoring.bpc import score_batch
from micota.training.data import Encoded
torch.set_num_threads(1)
vocab, n, chunk = map(int, sys.argv[1:4])
torch.manual_seed(0)
model = Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
    num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=n + 8, tie_word_embeddings=True)).eval()
enc = Encoded(ids=torch.randint(0, vocab, (n,)).tolist(), n_prompt=8, merged=False)
score_batch(model, [enc], 0, chunk=16, ranks=True)
kb = lambda key: int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1])
open("/proc/self/clear_refs", "w").write("5")
before = kb("VmRSS:")
st = score_batch(model, [enc], 0, chunk=chunk, ranks=True)[0]
print(json.dumps({"peak_mb": (kb("VmHWM:") - before) / 1024, "bits": st.nll_bits}))
"""


def run(vocab: int, tokens: int, chunk: int) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, str(vocab), str(tokens), str(chunk)], capture_output=True, text=True)
    if r.returncode:
        sys.exit(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def estimate_7b(chunk: int = 2048) -> dict[str, float]:
    """GB at the 7B recipe's settings (Qwen2.5-7B: hidden 3,584, MLP 18,944; bf16 weights; batch 4 x 16,384)."""
    B, L, V, H, I = 4, 16_384, 152_064, 3_584, 18_944
    gb = 1e9
    return {"weights_bf16": 7.62e9 * 2 / gb, "mlp_gate_up_bf16": 2 * B * L * I * 2 / gb,
            "last_hidden_bf16": B * L * H * 2 / gb, "logits_chunk_fp32_x3": 3 * chunk * V * 4 / gb,
            "full_logits_fp32_before": B * L * V * 4 / gb}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=152_064)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--chunk", type=int, default=256)
    a = ap.parse_args()
    chunked, whole = run(a.vocab, a.tokens, a.chunk), run(a.vocab, a.tokens, a.tokens)
    print(f"vocab={a.vocab} tokens={a.tokens}: full logits would be {(a.tokens - 8) * a.vocab * 4 / 2**20:.0f} MiB fp32")
    print(f"chunked (chunk {a.chunk:>5}) : peak RSS growth {chunked['peak_mb']:8.0f} MiB")
    print(f"whole sequence        : peak RSS growth {whole['peak_mb']:8.0f} MiB")
    print(f"ratio whole/chunked   : {whole['peak_mb'] / chunked['peak_mb']:.1f}x   |bits difference| = "
          f"{abs(chunked['bits'] - whole['bits']):.2e} of {whole['bits']:.1f}")
    est = estimate_7b()
    print("7B recipe estimate (GB): " + ", ".join(f"{k} {v:.2f}" for k, v in est.items()))
    print(f"  peak with chunking ~ {sum(v for k, v in est.items() if k != 'full_logits_fp32_before'):.1f} GB "
          f"vs full fp32 logits alone {est['full_logits_fp32_before']:.1f} GB")


if __name__ == "__main__":
    main()
