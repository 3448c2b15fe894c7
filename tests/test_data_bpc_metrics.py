"""micota bpc beyond BPC: token ranks and RSR against a manual computation, surprisal quantiles,
uniform baselines, and bounded memory (chunked logits equal the unchunked computation)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest

from micota.records import BpcRecord, read_jsonl
from micota.training.data import Encoded


def _big_vocab_model(vocab: int, seed: int = 0):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=4096, tie_word_embeddings=True, use_sliding_window=False)
    return Qwen2ForCausalLM(cfg).eval()


def test_chunked_scores_equal_the_full_logits_with_manual_ranks():
    import torch

    from micota.scoring.bpc import score_batch

    model = _big_vocab_model(5000)
    g = torch.Generator().manual_seed(1)
    encs = [Encoded(ids=torch.randint(0, 5000, (n,), generator=g).tolist(), n_prompt=p, merged=False)
            for n, p in ((300, 10), (120, 30), (57, 56))]
    for chunk in (7, 64, 10_000):  # uneven chunks, and one chunk for the whole completion
        got = score_batch(model, encs, 0, chunk=chunk, ranks=True)
        for e, st in zip(encs, got):
            with torch.no_grad():
                logits = model(torch.tensor([e.ids])).logits[0].double()
            bits, ranks = 0.0, 0
            for t in range(e.n_prompt, len(e.ids)):  # position t-1 predicts token t
                row = logits[t - 1]
                bits += float(torch.logsumexp(row, 0) - row[e.ids[t]]) / math.log(2)
                ranks += 1 + sum(float(v) > float(row[e.ids[t]]) for v in row)  # manual rank: strictly larger logits
            assert st.nll_bits == pytest.approx(bits, rel=1e-5)
            assert st.rank_sum == ranks


_MEM_SCRIPT = textwrap.dedent("""
    import json, sys, torch
    sys.path.insert(0, sys.argv[1])
    from test_data_bpc_metrics import _big_vocab_model
    from micota.scoring.bpc import score_batch
    from micota.training.data import Encoded
    torch.set_num_threads(1)
    vocab, n, chunk = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    model = _big_vocab_model(vocab)
    enc = Encoded(ids=torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(0)).tolist(), n_prompt=8, merged=False)
    score_batch(model, [enc], 0, chunk=16, ranks=True)  # warm up allocator and kernels
    def kb(key):
        return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1])
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak-RSS counter
    before = kb("VmRSS:")
    st = score_batch(model, [enc], 0, chunk=chunk, ranks=True)[0]
    print(json.dumps({"peak_mb": (kb("VmHWM:") - before) / 1024, "bits": st.nll_bits}))
""")


def _peak(tests_dir, vocab, n, chunk):
    r = subprocess.run([sys.executable, "-c", _MEM_SCRIPT, str(tests_dir), str(vocab), str(n), str(chunk)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_peak_memory_is_bounded_by_the_chunk(request):
    """V = 100k, 2,048 tokens: the full fp32 logits would be 2,040 x 100k x 4 B = 816 MB; chunks of
    128 positions cost 128 x 100k x 4 B = 51 MB per temporary."""
    tests_dir = request.path.parent
    chunked = _peak(tests_dir, 100_000, 2048, 128)
    whole = _peak(tests_dir, 100_000, 2048, 4096)  # one chunk = the unchunked computation
    print(f"\npeak RSS growth: chunk 128 {chunked['peak_mb']:.0f} MB, unchunked {whole['peak_mb']:.0f} MB")
    assert chunked["bits"] == pytest.approx(whole["bits"], rel=1e-6)
    assert whole["peak_mb"] > 800  # the unchunked logits really are that big
    assert chunked["peak_mb"] < 300


def test_cli_metrics_rsr_surprisal_and_uniform_baselines(tiny_model_dir, tmp_path, cli):
    from test_data_bpc import _dataset

    ds = _dataset(tmp_path / "ds")
    r = cli("bpc", str(tiny_model_dir), "--data", str(ds), "--out", str(tmp_path / "o"),
            "--metrics", "bpc,bpt,rsr,surprisal", "--logits-chunk", "5")
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    recs = read_jsonl(tmp_path / "o" / "bpc.jsonl", BpcRecord)
    v = s["vocab_size"]
    assert s["bpt_uniform"] == pytest.approx(math.log2(v)) and s["rsr_uniform"] == pytest.approx((v + 1) / 2 / math.log2(v))
    assert s["bpc_uniform"] == pytest.approx(math.log2(v) * s["tokens_total"] / s["chars_total"])
    for rec in recs:
        assert rec.rsr == pytest.approx(rec.mean_rank / rec.bpt) and 1 <= rec.mean_rank <= v
    q = s["surprisal_bits_quantiles"]
    assert list(q) == ["q10", "q25", "q50", "q75", "q90", "q99"] and all(a <= b for a, b in zip(q.values(), list(q.values())[1:]))
    # a random-init model is close to uniform: its median surprisal is near log2 V
    assert abs(q["q50"] - math.log2(v)) < 1.5
    bad = cli("bpc", str(tiny_model_dir), "--data", str(ds), "--metrics", "bpc,nope")
    assert bad.returncode == 2 and "unknown metric 'nope'" in bad.stderr
