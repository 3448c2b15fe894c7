"""Generation throughput: the in-process ``hf`` backend (batched) vs ``--backend openai`` against
``transformers serve --continuous-batching`` on the same machine, and the server client's overhead.

Same model, the same GSM8K prompts rendered with the chat template and eval instruction, greedy,
the same ``max_new_tokens``, the same torch thread count in both processes. The prompts are split
into ``--rounds`` groups and the two ways alternate group by group (a b, b a, ...), so on a shared
machine both meet the same drift in load; CPU seconds per token are reported beside wall time. Prints generated
tokens/s of each way and their ratio, the client's own CPU seconds (``getrusage(RUSAGE_SELF)`` of the
benchmark process, all its threads, while it only sends requests: tokenizer + HTTP + threads) as a
share of the run's wall time and of all CPU time spent (client + server), its CPU milliseconds per
request (goal: the client is not the bottleneck, <= 5 % of the run), and how many greedy completions
are identical between the ways.

The server is started first (its start-up overlaps loading the hf model) and must answer
``GET /v1/models`` within ``--ready-timeout`` seconds; if it exits or is not ready in time the script
stops with one line naming the log. ``transformers serve`` flags used: ``--continuous-batching``,
``--cb-num-blocks``/``--cb-block-size`` (on CPU an unbounded paged cache takes 60 % of the RAM),
``--device cpu --dtype float32``.

    .venv/bin/python benchmarks/serving_throughput.py [--model smollm2-135m] [--prompts 64] [--max-new-tokens 128]
        [--batch-size 16] [--concurrency 16] [--rounds 4] [--cb-num-blocks 512] [--ready-timeout 1200] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
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
from micota.generation.openai_backend import OpenAIBackend
from micota.generation.prompts import build_messages, render_prompt
from micota.models import load_model, load_tokenizer, resolve_model


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def self_cpu() -> float:
    """CPU seconds (user + sys) of this process, every thread included."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def start_server(path: str, port: int, threads: int, cb_num_blocks: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    exe = Path(sys.executable).with_name("transformers")
    with open(log, "wb") as f:
        return subprocess.Popen([str(exe), "serve", path, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
                                 "--dtype", "float32", "--continuous-batching", "--cb-num-blocks", str(cb_num_blocks),
                                 "--cb-block-size", "32"], stdout=f, stderr=subprocess.STDOUT, env=env)


def wait_server(server: subprocess.Popen, url: str, log: Path, timeout: float) -> None:
    """Return once ``GET {url}/models`` answers 200; one line and exit 1 if the server dies or is late."""
    import httpx

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if server.poll() is not None:
            tail = (log.read_text(errors="replace").strip().splitlines() or ["no output"])[-1]
            sys.exit(f"error: transformers serve exited with code {server.returncode} before it was ready: {tail} (log: {log})")
        try:
            if httpx.get(f"{url}/models", timeout=5.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    sys.exit(f"error: transformers serve not ready after {timeout:.0f} s more at load average {os.getloadavg()[0]:.1f} (log: {log}); "
             "raise --ready-timeout on a busy machine")


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
    ap.add_argument("--rounds", type=int, default=4, help="groups of prompts; the ways alternate group by group")
    ap.add_argument("--ready-timeout", type=float, default=1200.0, help="seconds to wait for the server to load")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the server on kill/timeout
    path = str(resolve_model(args.model))
    tok = load_tokenizer(path)
    problems = load_benchmark("gsm8k", data_dir=args.data_dir, limit=args.prompts)
    prompts = [render_prompt(tok, build_messages(p.problem)) for p in problems]
    params = SamplingParams(max_new_tokens=args.max_new_tokens)
    threads = torch.get_num_threads()

    load_start = os.getloadavg()

    # the server loads while this process loads the hf model; it idles (CB starts lazily) during (a)
    port = free_port()
    log = Path(tempfile.mkdtemp()) / "serve.log"
    url = f"http://127.0.0.1:{port}/v1"
    t_launch = time.perf_counter()
    server = start_server(path, port, threads, args.cb_num_blocks, log)
    try:
        hf = HFBackend(path, model_obj=load_model(path, dtype="float32"), tokenizer=tok, batch_size=args.batch_size)
        hf.generate(prompts[:1], SamplingParams(max_new_tokens=2))  # warm-up
        wait_server(server, url, log, args.ready_timeout - (time.perf_counter() - t_launch))
        print(f"server ready {time.perf_counter() - t_launch:.1f} s after launch (log {log})", flush=True)
        client = OpenAIBackend(path, server_url=url, concurrency=args.concurrency, tokenizer=tok)
        client.generate(prompts[:2], SamplingParams(max_new_tokens=2))  # warm-up (the CB manager starts lazily)
        sp = psutil.Process(server.pid)

        def run_hf(group):  # (a) the hf backend, batched, in this process
            c0, t0 = self_cpu(), time.perf_counter()
            out = hf.generate(group, params)
            return out, time.perf_counter() - t0, self_cpu() - c0, 0.0

        def run_srv(group):  # (b) this process as the client of transformers serve --continuous-batching
            c0, s0, t0 = self_cpu(), cpu_seconds(sp), time.perf_counter()
            out = client.generate(group, params)
            return out, time.perf_counter() - t0, self_cpu() - c0, cpu_seconds(sp) - s0

        # the ways alternate round by round (a b, b a, ...) so both see the same drift in the machine's load
        out_hf, out_srv = [], []
        t_hf = cpu_hf = t_srv = cpu_client = cpu_server = 0.0
        step = -(-len(prompts) // args.rounds)
        for r, i in enumerate(range(0, len(prompts), step)):
            group = prompts[i:i + step]
            for way in (("a", "b") if r % 2 == 0 else ("b", "a")):
                if way == "a":
                    out, t, c, cs = run_hf(group)
                    out_hf += out
                    t_hf, cpu_hf = t_hf + t, cpu_hf + c
                else:
                    out, t, c, cs = run_srv(group)
                    out_srv += out
                    t_srv, cpu_client, cpu_server = t_srv + t, cpu_client + c, cpu_server + cs
                print(f"round {r + 1}/{args.rounds} ({way}): {sum(x[0].completion_tokens for x in out)} tokens in "
                      f"{t:.1f} s, CPU s: this process {c:.2f}, server {cs:.2f}; load average {os.getloadavg()[0]:.1f}",
                      flush=True)
        client.close()
    finally:
        server.kill()
        server.wait()
    load_end = os.getloadavg()

    def toks(out):
        return sum(c[0].completion_tokens for c in out)

    print(f"model {args.model}, {len(prompts)} GSM8K prompts, greedy, max_new_tokens {args.max_new_tokens}, "
          f"torch {torch.__version__}, {threads} threads per process, {platform.processor() or platform.machine()}, "
          f"load average (1/5/15 min) at start {load_start[0]:.2f}/{load_start[1]:.2f}/{load_start[2]:.2f}, "
          f"at end {load_end[0]:.2f}/{load_end[1]:.2f}/{load_end[2]:.2f}")
    print(f"{len(prompts)} prompts in {args.rounds} rounds, ways alternating (a b, b a, ...)")
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
