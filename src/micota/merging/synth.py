"""Synthetic model pairs for merge tests and benchmarks: a random base and perturbed fine-tunes.

Tensor names and shapes come from the real transformers class (built on the ``meta`` device, so
no memory is used); values are random and written tensor by tensor with the streaming writer, so
a 0.5B-parameter pair is produced without holding either model in memory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from micota.merging.tensorio import ShardedWriter

QWEN25_05B = dict(hidden=896, intermediate=4864, layers=24, heads=14, kv_heads=2, vocab=151936, tie=True)


def _config(arch: str, *, hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, vocab: int,
            tie: bool) -> Any:
    from transformers import LlamaConfig, Qwen2Config

    cls, model_cls = {"qwen2": (Qwen2Config, "Qwen2ForCausalLM"), "llama": (LlamaConfig, "LlamaForCausalLM")}[arch]
    return cls(architectures=[model_cls], vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
               num_attention_heads=heads, num_key_value_heads=kv_heads, tie_word_embeddings=tie,
               max_position_embeddings=256)


def _shapes(config: Any) -> dict[str, tuple[int, ...]]:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    names = {n: tuple(p.shape) for n, p in model.state_dict().items()}
    if config.tie_word_embeddings:
        names.pop("lm_head.weight", None)
    return dict(sorted(names.items()))


def _write(folder: Path, config: Any, tensors: dict[str, tuple[int, ...]], dtype: torch.dtype, make,
           shard_size: int = 1 << 62) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    writer = ShardedWriter(folder, [(n, dtype, s) for n, s in tensors.items()], shard_size=shard_size)
    try:
        for name, shape in tensors.items():
            writer.write(name, make(name, shape))
        writer.finish()
    finally:
        writer.close()


def make_pair(root: str | os.PathLike, *, arch: str = "qwen2", dtype: str = "bfloat16", n_finetuned: int = 1,
              noise: float = 0.01, seed: int = 0, hidden: int = 32, intermediate: int = 64, layers: int = 2,
              heads: int = 4, kv_heads: int = 2, vocab: int = 96, tie: bool = True,
              ft_vocab: int | None = None, shard_size: int = 1 << 62) -> tuple[Path, list[Path]]:
    """Write ``root/base`` and ``root/ft{i}`` (base + noise·N(0,1) per tensor); returns their paths.

    ``ft_vocab`` gives the fine-tunes a different vocabulary size (rows added/removed); ``shard_size``
    (bytes) splits each model into several safetensors shards.
    """
    root = Path(root)
    dt = getattr(torch, dtype)
    cfg = _config(arch, hidden=hidden, intermediate=intermediate, layers=layers, heads=heads, kv_heads=kv_heads,
                  vocab=vocab, tie=tie)
    shapes = _shapes(cfg)

    def base_tensor(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed * 1_000_003 + sum(map(ord, name)) * 7919 + len(name))
        return (torch.randn(shape, generator=g) * 0.02).to(dt)

    _write(root / "base", cfg, shapes, dt, base_tensor, shard_size)
    fts = []
    for i in range(n_finetuned):
        fcfg, fshapes = cfg, shapes
        if ft_vocab is not None:
            fcfg = _config(arch, hidden=hidden, intermediate=intermediate, layers=layers, heads=heads,
                           kv_heads=kv_heads, vocab=ft_vocab, tie=tie)
            fshapes = _shapes(fcfg)

        def ft_tensor(name: str, shape: tuple[int, ...], i: int = i) -> torch.Tensor:
            b = base_tensor(name, shapes[name])
            if shape != b.shape:  # resized vocabulary
                b = torch.cat([b, base_tensor(name + "#extra", (shape[0],) + shape[1:])])[: shape[0]]
            g = torch.Generator().manual_seed(seed + 17 * (i + 1) + 31 * sum(map(ord, name)))
            return (b.float() + noise * torch.randn(shape, generator=g)).to(dt)

        _write(root / f"ft{i}", fcfg, fshapes, dt, ft_tensor, shard_size)
        fts.append(root / f"ft{i}")
    return root / "base", fts
