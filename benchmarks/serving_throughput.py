"""Generation throughput: the in-process ``hf`` backend (batched) vs ``--backend openai`` against
``transformers serve --continuous-batching`` on the same machine, and the server client's overhead.

Same model, the same GSM8K prompts rendered with the chat template and eval instruction, greedy,
the same ``max_new_tokens``, the same torch thread count in both processes. Prints generated
tokens/s of each way and their ratio, the client's own CPU seconds (the benchmark process while it
only sends requests: tokenizer + HTTP + threads) as a share of the run's wall time and of all CPU
time spent (client + server), its CPU milliseconds per request (goal: the client is not the
bottleneck, <= 5 % of the run), and how many greedy completions are identical between the ways.

    .venv/bin/python benchmarks/serving_throughput.py [--model smollm2-135m] [--prompts 64] [--max-new-tokens 128]
        [--batch-size 16] [--concurrency 16] [--cb-num-blocks 512]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch

from micota.data.benchmarks import load_benchmark
from micota.generation.backends import HFBackend, SamplingParams
from micota.generation.openai_backend import OpenAIBackend, wait_ready
from micota.generation.prompts import build_messages, render_prompt
from micota.models import load_model, load_tokenizer, resolve_model


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16, help="hf backend batch size")
    ap.add_argument("--concurrency", type=int, default=16, help="requests in flight to the server")
    ap.add_argument("--cb-num-blocks", type=int, default=512,
                    help="KV-cache pages of the server (x32 tokens); unbounded, CB takes 60%% of the RAM on CPU")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the server on kill/timeout
    path = str(resolve_model(args.model))
    tok = load_tokenizer(path)
    problems = load_benchmark("gsm8k", data_dir=args.data_dir, limit=args.prompts)
    prompts = [render_prompt(tok, build_messages(p.problem)) for p in problems]
    params = SamplingParams(max_new_tokens=args.max_new_tokens)
    threads = torch.get_num_threads()
    me = psutil.Process()

    # (a) hf backend, batched, in this process
    hf = HFBackend(path, model_obj=load_model(path, dtype="float32"), tokenizer=tok, batch_size=args.batch_size)
    hf.generate(prompts[:1], SamplingParams(max_new_tokens=2))  # warm-up
    c0, t0 = cpu_seconds(me), time.perf_counter()
    out_hf = hf.generate(prompts, params)
    t_hf, cpu_hf = time.perf_counter() - t0, cpu_seconds(me) - c0
    del hf
    print(f"(a) done: {sum(c[0].completion_tokens for c in out_hf)} tokens in {t_hf:.2f} s wall, {cpu_hf:.2f} CPU s", flush=True)

    # (b) the server backend against transformers serve --continuous-batching
    port = free_port()
    log = Path(tempfile.mkdtemp()) / "serve.log"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    exe = Path(sys.executable).with_name("transformers")
    with open(log, "wb") as f:
        server = subprocess.Popen([str(exe), "serve", path, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
                                   "--dtype", "float32", "--continuous-batching",
                                   "--cb-num-blocks", str(args.cb_num_blocks), "--cb-block-size", "32"], stdout=f, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        wait_ready(url, timeout=300)
        client = OpenAIBackend(path, server_url=url, concurrency=args.concurrency, tokenizer=tok)
        client.generate(prompts[:2], SamplingParams(max_new_tokens=2))  # warm-up (the CB manager starts lazily)
        sp = psutil.Process(server.pid)
        c0, s0, t0 = cpu_seconds(me), cpu_seconds(sp), time.perf_counter()
        out_srv = client.generate(prompts, params)
        t_srv, cpu_client, cpu_server = time.perf_counter() - t0, cpu_seconds(me) - c0, cpu_seconds(sp) - s0
        client.close()
    finally:
        server.kill()
        server.wait()

    def toks(out):
        return sum(c[0].completion_tokens for c in out)

    print(f"model {args.model}, {len(prompts)} GSM8K prompts, greedy, max_new_tokens {args.max_new_tokens}, "
          f"torch {torch.__version__}, {threads} threads per process, {platform.processor() or platform.machine()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'way':<58} {'tokens':>7} {'wall s':>8} {'CPU s':>8} {'tokens/s':>9}")
    print(f"{f'(a) hf backend, batched (batch {args.batch_size})':<58} {toks(out_hf):>7} {t_hf:>8.2f} {cpu_hf:>8.2f} "
          f"{toks(out_hf) / t_hf:>9.2f}")
    name = f"(b) openai backend -> transformers serve --continuous-batching (concurrency {args.concurrency})"
    print(f"{name:<58} {toks(out_srv):>7} {t_srv:>8.2f} {cpu_client + cpu_server:>8.2f} {toks(out_srv) / t_srv:>9.2f}")
    print(f"server / hf tokens/s: {(toks(out_srv) / t_srv) / (toks(out_hf) / t_hf):.2f}x; "
          f"CPU s per token: hf {cpu_hf / toks(out_hf) * 1e3:.1f} ms, server+client {(cpu_client + cpu_server) / toks(out_srv) * 1e3:.1f} ms")
    print(f"client CPU: {cpu_client:.2f} s = {100 * cpu_client / t_srv:.2f}% of the run's wall time, "
          f"{100 * cpu_client / (cpu_client + cpu_server):.2f}% of all CPU time (server {cpu_server:.2f} s); "
          f"{1e3 * cpu_client / len(prompts):.1f} ms per request (goal <= 5%)")
    same = sum(a[0].text == b[0].text for a, b in zip(out_hf, out_srv))
    print(f"identical greedy completions: {same}/{len(prompts)}")


if __name__ == "__main__":
    main()
