"""Tiny models built in-process: a byte-level BPE tokenizer with a ChatML template, and small
random-init Qwen2 causal LMs. Unit tests use them (milliseconds per step); the miniature world
uses the same builders at larger sizes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def train_chatml_tokenizer(texts: Iterable[str], *, vocab_size: int = 512, min_frequency: int = 1,
                           split_digits: bool = False) -> Any:
    """Train a byte-level BPE tokenizer on ``texts``; eos = ``<|im_end|>``, pad = ``<|endoftext|>``.

    ``split_digits`` makes every digit its own token (no merges across digits), which tiny models
    need to learn column arithmetic.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if split_digits:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.padding_side = "left"
    return fast


def tiny_qwen2_config(tokenizer: Any, *, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                      intermediate: int | None = None, max_positions: int = 2048, tie: bool = True) -> Any:
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate or hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=tie,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        use_sliding_window=False,
    )


def make_tiny_model(tokenizer: Any, *, seed: int = 0, **config_kwargs: Any) -> Any:
    """A random-init Qwen2ForCausalLM sized for ``tokenizer`` (default ~0.1M params)."""
    import torch
    from transformers import GenerationConfig, Qwen2ForCausalLM

    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(tiny_qwen2_config(tokenizer, **config_kwargs))
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    return model.eval()


def save_tiny(out_dir: str | os.PathLike, texts: Iterable[str], *, vocab_size: int = 512, seed: int = 0,
              **config_kwargs: Any) -> Path:
    """Train a tokenizer on ``texts``, build a tiny model, save both as an HF folder (safetensors)."""
    out = Path(out_dir)
    tok = train_chatml_tokenizer(texts, vocab_size=vocab_size)
    model = make_tiny_model(tok, seed=seed, **config_kwargs)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
