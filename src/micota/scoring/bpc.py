"""Bits per character (BPC) of SFT completions under a scoring model — the learnability measure.

For each record, with the prompt rendered by :func:`micota.generation.prompts.render_prompt`:

    nll_bits = -sum_{t in completion} log2 p(x_t | x_<t)      (completion text tokens; no EOS)
    bpc      = nll_bits / len(completion characters)
    bpt      = nll_bits / number of completion tokens

Tokenization boundary: prompt+completion are tokenized jointly and the completion starts at the
first token whose character offset is at or after the prompt's end
(:func:`micota.training.data.encode_pair`); a token merged across the boundary makes that record
re-encoded as prompt tokens + completion tokens, so every completion character is scored exactly
once. Records are sorted by length and scored in left-padded batches (explicit position ids;
``logits_to_keep`` limits the logits to the completion tail).

Summary: mean BPC, character-weighted mean (total bits / total characters), a bootstrap 95% CI of
the mean, and the same for bits per token.
"""

from __future__ import annotations

import functools
import inspect
import math
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from tqdm import tqdm

from micota.config import StageConfig
from micota.errors import UserError
from micota.finite import require_finite
from micota.generation.prompts import render_prompt
from micota.io import atomic_dir, atomic_write_json
from micota.manifest import write_manifest
from micota.records import BpcRecord, write_jsonl_atomic
from micota.training.data import Encoded, check_template, completion_text, encode_pair, read_sft_dataset, read_template

LN2 = math.log(2.0)


class BpcConfig(StageConfig):
    model: str = Field(..., description="Scoring model spec (usually the student's base model)")
    data: str = Field(..., description="SFT dataset: a directory holding data.jsonl or a .jsonl file")
    out: str | None = Field(None, description="Output directory (bpc.jsonl, summary.json, manifest.json); omit to only return the summary")
    batch_size: int = Field(8, ge=1, description="Records per forward pass (length-sorted)")
    max_length: int | None = Field(None, ge=2, description="Max prompt+completion tokens (default: the model's context); longer records are skipped and counted")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("float32", description="Model dtype for scoring")
    device: str = Field("auto", description="Device: auto, cpu, cuda, cuda:N")
    template: str | None = Field(None, description="Jinja chat template file (for tokenizers without one)")
    use_chat_template: bool = Field(True, description="Render prompts with the chat template (off: plain text)")
    seed: int = Field(0, description="Seed of the bootstrap CI")


def _ci(values: list[float], seed: int) -> tuple[float, float]:
    from micota.scoring.stats import bootstrap_ci

    return bootstrap_ci(values, seed=seed)


@functools.lru_cache(maxsize=None)
def _accepts_logits_to_keep(cls: type) -> bool:
    return "logits_to_keep" in inspect.signature(cls.forward).parameters


def score_batch(model: Any, batch: list[Encoded], pad_id: int) -> list[float]:
    """Summed completion NLL in bits for each encoded pair (left-padded, one forward pass)."""
    import torch
    import torch.nn.functional as F

    L = max(len(e.ids) for e in batch)
    K = max(e.n_completion for e in batch) + 1
    dev = next(model.parameters()).device
    ids = torch.full((len(batch), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), L), dtype=torch.long)
    for i, e in enumerate(batch):
        ids[i, L - len(e.ids):] = torch.tensor(e.ids)
        mask[i, L - len(e.ids):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    kwargs = {"logits_to_keep": K} if _accepts_logits_to_keep(type(model)) else {}
    with torch.inference_mode():
        logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev), **kwargs).logits
    logits = logits[:, -K:]  # kept index j is position L - K + j
    losses = []
    for i, e in enumerate(batch):
        m = e.n_completion
        pred = logits[i, K - m - 1:K - 1].float()
        target = ids[i, L - m:].to(dev)
        losses.append(F.cross_entropy(pred, target, reduction="sum"))
    require_finite(torch.stack(losses), "the scoring model's loss (NaN/Inf weights?)")  # never a NaN bpc
    return [float(x) / LN2 for x in losses]


def compute_bpc(cfg: BpcConfig) -> dict[str, Any]:
    """Score every record; write outputs when ``cfg.out`` is set; return the summary."""
    from micota.models import load_model, load_tokenizer

    t0 = time.time()
    if cfg.out and Path(cfg.out).exists():
        raise UserError(f"{cfg.out}: output already exists (remove it or choose another path)")
    examples = read_sft_dataset(cfg.data)  # bad rows fail before the model loads
    template = read_template(cfg.template)
    tok = load_tokenizer(cfg.model)
    check_template(tok, use_chat_template=cfg.use_chat_template, template=template)
    encoded: list[tuple[int, Encoded]] = []
    merged = 0
    for i, ex in enumerate(examples):
        prompt = render_prompt(tok, ex.prompt, use_chat_template=cfg.use_chat_template, template=template)
        e = encode_pair(tok, prompt, completion_text(ex))
        merged += e.merged
        encoded.append((i, e))
    limit = cfg.max_length
    if limit is None:
        from transformers import AutoConfig

        from micota.models import resolve_model

        limit = getattr(AutoConfig.from_pretrained(resolve_model(cfg.model)), "max_position_embeddings", None) or 10**9
    kept = [(i, e) for i, e in encoded if len(e.ids) <= limit]
    skipped = len(encoded) - len(kept)
    if not kept:
        raise UserError(f"every record is longer than {limit} tokens; nothing to score")
    encoded = kept
    model = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device)

    encoded.sort(key=lambda x: -len(x[1].ids))
    bits: dict[int, float] = {}
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    for s in tqdm(range(0, len(encoded), cfg.batch_size), desc="bpc", unit="batch", disable=len(encoded) <= cfg.batch_size):
        chunk = encoded[s:s + cfg.batch_size]
        for (i, _), b in zip(chunk, score_batch(model, [e for _, e in chunk], pad)):
            bits[i] = b

    records = []
    for i, e in sorted(encoded, key=lambda x: x[0]):
        chars = len(completion_text(examples[i]))
        records.append(BpcRecord(id=examples[i].id, chars=chars, tokens=e.n_completion, nll_bits=bits[i],
                                 bpc=bits[i] / chars, bpt=bits[i] / e.n_completion))
    bpcs, bpts = [r.bpc for r in records], [r.bpt for r in records]
    summary = {
        "model": cfg.model,
        "data": cfg.data,
        "n": len(records),
        "skipped_too_long": skipped,
        "boundary_retokenized": merged,
        "bpc_mean": sum(bpcs) / len(bpcs),
        "bpc_char_weighted": sum(r.nll_bits for r in records) / sum(r.chars for r in records),
        "bpc_ci95": _ci(bpcs, cfg.seed),
        "bpt_mean": sum(bpts) / len(bpts),
        "bpt_token_weighted": sum(r.nll_bits for r in records) / sum(r.tokens for r in records),
        "bpt_ci95": _ci(bpts, cfg.seed),
        "chars_total": sum(r.chars for r in records),
        "tokens_total": sum(r.tokens for r in records),
        "wall_s": round(time.time() - t0, 3),
    }
    if cfg.out:
        with atomic_dir(cfg.out) as tmp:
            write_jsonl_atomic(tmp / "bpc.jsonl", records)
            atomic_write_json(tmp / "summary.json", summary)
            write_manifest(tmp, stage="bpc", config=cfg, inputs={"model": cfg.model, "data": cfg.data},
                           counts={"records": len(records), "skipped_too_long": skipped}, started_at=t0)
    return summary
