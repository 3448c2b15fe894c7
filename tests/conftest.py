"""Shared fixtures: tiny models built in-process, the real SmolLM2 model, the shared data dir.

Everything runs offline: HF_HUB_OFFLINE is set for the whole suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# bases a test pretrains are cached here, never in the user's ~/.cache (shipped bases are still found)
USER_CACHE = Path(os.environ.get("MICOTA_CACHE") or Path.home() / ".cache" / "micota")
os.environ.setdefault("MICOTA_CACHE", tempfile.mkdtemp(prefix="micota-test-cache-"))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
BENCH_DIR = SHARED_DATA / "benchmarks"
TRAIN_FILE = SHARED_DATA / "train" / "math_train.jsonl"

TINY_TEXTS = [
    "What is 12 + 7? Add the ones: 2 + 7 = 9. The tens stay 1. So the answer is \\boxed{19}.",
    "Compute 3 * 4. Three fours make 12, so the answer is \\boxed{12}.",
    "Please reason step by step, and put your final answer within \\boxed{}.",
    "Wait, let me check: 5 - 2 = 3. Yes. The final answer is \\boxed{3}.",
    "0 1 2 3 4 5 6 7 8 9 + - * / = ( ) the a is of and to",
] * 10


@pytest.fixture(scope="session")
def data_dir() -> Path:
    assert BENCH_DIR.is_dir(), f"shared benchmark data missing at {BENCH_DIR}"
    return BENCH_DIR


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A ~0.1M-parameter Qwen2 with a ChatML BPE tokenizer, saved as safetensors."""
    from micota.models.tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny") / "model", TINY_TEXTS, vocab_size=400)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real SmolLM2-135M-Instruct: the user's converted copy (``micota models prepare``) if there
    is one, linked into the test cache (tests only read it), else converted once for the session."""
    from micota.models import prepare_default
    from micota.models.load import cache_dir

    user, test = USER_CACHE / "models" / "smollm2-135m", cache_dir() / "models" / "smollm2-135m"
    if test != user and not test.exists() and (user / "config.json").is_file() and any(user.glob("*.safetensors")):
        test.parent.mkdir(parents=True, exist_ok=True)
        test.symlink_to(user, target_is_directory=True)
    return prepare_default("smollm2-135m")


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m micota ARGS`` as a real subprocess; returns the completed process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "micota", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def small_disk(tmp_path):
    """A real, nearly full disk: a tmpfs of the given size mounted in a fresh directory.

    ``small_disk(kib)`` returns the mount point; it is unmounted after the test. Needs root (the
    CI container is root); anywhere else the test fails with one line saying so.
    """
    mounts = []

    def make(kib: int) -> Path:
        d = tmp_path / f"disk{len(mounts)}"
        d.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(d)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.fail(f"cannot mount a small tmpfs for a real full-disk test (needs root): {r.stderr.strip()}")
        mounts.append(d)
        return d

    yield make
    for d in mounts:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def write_gguf(model_dir: Path, path: Path) -> Path:
    """A float32 GGUF file (qwen2 architecture, gpt2 byte-level tokenizer) of a tiny model folder:
    written with the ``gguf`` package the way llama.cpp's converter lays one out, so transformers'
    GGUF loader reads back the same tensors and the same tokenizer."""
    import json

    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    cfg = json.loads((model_dir / "config.json").read_text())
    tj = json.loads((model_dir / "tokenizer.json").read_text())
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg.get("rope_theta", 10000.0))
    tokens = [t for t, _ in sorted(tj["model"]["vocab"].items(), key=lambda kv: kv[1])]
    special = {a["id"]: a["content"] for a in tj["added_tokens"]}
    for i, t in sorted(special.items()):
        if i < len(tokens):
            tokens[i] = t
        else:
            tokens.append(t)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types([3 if i in special else 1 for i in range(len(tokens))])  # 3: control
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]])
    template = model_dir / "chat_template.jinja"
    w.add_chat_template(template.read_text() if template.is_file() else json.loads((model_dir / "tokenizer_config.json").read_text())["chat_template"])
    w.add_eos_token_id(cfg["eos_token_id"])
    w.add_pad_token_id(cfg["pad_token_id"])
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, cfg["num_hidden_layers"])
    for k, v in load_file(model_dir / "model.safetensors").items():
        w.add_tensor(names.get_name(k, try_suffixes=(".weight", ".bias")), v.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real ``transformers serve`` process on 127.0.0.1 (niced, one thread), pinned to one model."""

    def __init__(self, model_dir: Path, log: Path, *, port: int | None = None, extra: tuple[str, ...] = ()):
        self.model_dir, self.log, self.port, self.extra = str(model_dir), Path(log), port or free_port(), extra
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 600) -> "Server":
        import time
        import urllib.request

        exe = Path(sys.executable).with_name("transformers")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(["nice", "-n", "10", str(exe), "serve", self.model_dir, "--host", "127.0.0.1",
                                          "--port", str(self.port), "--device", "cpu", "--dtype", "float32", *self.extra],
                                         stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
                pytest.fail(f"transformers serve exited with code {self.proc.returncode}: {tail[0]}", pytrace=False)
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.kill()
        pytest.fail(f"transformers serve on port {self.port} not ready after {timeout:.0f}s (log: {self.log})", pytrace=False)

    def kill(self) -> None:
        import signal

        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def completions_served(self) -> int:
        """POST /v1/completions answered 200, from the server's access log."""
        return self.log.read_text(errors="replace").count('"POST /v1/completions HTTP/1.1" 200')


@pytest.fixture
def start_server(tmp_path):
    """``start_server(model_dir, name)`` starts a server; every one is killed when the test ends."""
    started: list[Server] = []

    def start(model_dir: Path, name: str = "server", **kw) -> Server:
        srv = Server(model_dir, tmp_path / f"{name}.log", **kw)
        started.append(srv)
        return srv.start()

    yield start
    for srv in started:
        srv.kill()

QUICK_THREADS = os.environ.get("OMP_NUM_THREADS", "1")  # the same for every run of the quick recipe that is compared


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """``micota demo --quick`` (the quick miniature recipe, local executor) run once for the session:
    the demo test checks it, the Slurm test compares its results.json with a Slurm run's."""
    out = tmp_path_factory.mktemp("demo-quick") / "demo"
    return out, run_cli("demo", "--quick", "--out", str(out), env={"OMP_NUM_THREADS": QUICK_THREADS}, timeout=1800)
