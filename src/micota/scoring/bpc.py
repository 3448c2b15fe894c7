"""Learnability of SFT completions under a scoring model: bits per character (BPC) and beyond.

For each record, with the prompt rendered by :func:`micota.generation.prompts.render_prompt`,
``s_t = -log2 p(x_t | x_<t)`` the surprisal (bits) of completion token ``t`` (text tokens; no EOS)
and ``r_t`` its rank (1 = the model's top choice; ``1 + #{v : logit_v > logit_{x_t}}``):

    nll_bits = sum_t s_t
    bpc      = nll_bits / len(completion characters)
    bpt      = nll_bits / number of completion tokens                  (= mean surprisal)
    rsr      = mean_t r_t / mean_t s_t     rank-surprisal ratio (arXiv 2601.14249; surprisal in bits)

``--metrics`` picks what is computed and summarised: ``bpc``, ``bpt`` (always computed, they cost
nothing), ``rsr`` (token ranks) and ``surprisal`` (the distribution of per-token surprisal over all
records: quantiles 10/25/50/75/90/99% from a histogram with 1/64-bit bins, so within 0.016 bits).
Every metric carries its uniform-vocabulary baseline (a model that knows nothing, V = vocabulary
size): surprisal ``log2 V`` per token, so ``bpt = log2 V``, ``bpc = log2 V · tokens/chars``; expected
rank ``(V+1)/2``, so ``rsr = (V+1) / (2 log2 V)``.

Bounded memory: the full ``sequence × vocabulary`` fp32 logits are never built. The decoder's last
hidden states of the completion positions are projected through the output layer ``logits_chunk``
positions at a time; each chunk's log-softmax, target surprisal and rank are reduced to a few
numbers per token before the next chunk, so the logits cost about ``3 × logits_chunk × V × 4``
bytes (the chunk and its temporaries) whatever the sequence length. Models whose logits are not a plain linear
head over the decoder output (soft-capping, logit scaling) fall back to one record at a time with
``logits_to_keep``.

Tokenization boundary: prompt+completion are tokenized jointly and the completion starts at the
first token whose character offset is at or after the prompt's end
(:func:`micota.training.data.encode_pair`); a token merged across the boundary makes that record
re-encoded as prompt tokens + completion tokens, so every completion character is scored exactly
once. Records are sorted by length and scored in left-padded batches (explicit position ids;
``logits_to_keep`` limits the logits to the completion tail).

Summary: mean BPC, character-weighted mean (total bits / total characters), a bootstrap 95% CI of
the mean, and the same for bits per token (and RSR when asked), each with its ``*_uniform`` baseline.

Peak memory at paper scale (Qwen2.5-7B student base, V = 152,064, 16,384 tokens, batch 4, bf16
weights): weights 15.2 GB; the decoder's activations for one layer at a time with SDPA attention,
dominated by the MLP intermediate 4 × 16,384 × 18,944 × 2 B ≈ 2.5 GB (gate and up: ≈ 5 GB); last
hidden states 4 × 16,384 × 3,584 × 2 B ≈ 0.47 GB; logits chunk 2,048 × 152,064 × 4 B ≈ 1.25 GB
with its temporaries ≈ 3.7 GB (3×, as measured). Total ≈ 24 GB, against ≈ 40 GB of fp32 logits alone
(4 × 16,384 × 152,064 × 4 B) before this change. See docs/design/eval.md.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
import inspect
import math
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pydantic import Field, field_validator
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
METRICS = ("bpc", "bpt", "rsr", "surprisal")
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
_BINS_PER_BIT, _MAX_BITS = 64, 64


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
    metrics: list[str] = Field(default_factory=lambda: ["bpc", "bpt"],
                               description="Metrics: bpc, bpt, rsr (rank-surprisal ratio), surprisal (per-token quantiles)")
    logits_chunk: int = Field(2048, ge=1, description="Completion positions projected to vocabulary logits at a time "
                              "(memory: about 3 x logits_chunk x vocabulary x 4 bytes)")

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v: list[str]) -> list[str]:
        bad = [m for m in v if m not in METRICS]
        if bad:
            raise ValueError(f"unknown metric {bad[0]!r} (choose from {', '.join(METRICS)})")
        if not v:
            raise ValueError("give at least one metric")
        return list(dict.fromkeys(v))


def _ci(values: list[float], seed: int) -> tuple[float, float]:
    from micota.scoring.stats import bootstrap_ci

    return bootstrap_ci(values, seed=seed)


@functools.lru_cache(maxsize=None)
def _accepts_logits_to_keep(cls: type) -> bool:
    return "logits_to_keep" in inspect.signature(cls.forward).parameters


@dataclass
class TokenStats:
    """Per-record sums over completion tokens, and a surprisal histogram (when asked)."""

    nll_bits: float = 0.0
    rank_sum: float = 0.0
    hist: Any = None  # np.ndarray of counts per 1/64-bit bin, or None


def _plain_head(model: Any) -> Any | None:
    """The output layer when logits = head(decoder(x)) exactly; None when the model does more."""
    cfg = getattr(model, "config", None)
    if any(getattr(cfg, k, None) not in (None, 1.0) for k in ("final_logit_softcapping", "logit_scale")):
        return None
    try:
        head, dec = model.get_output_embeddings(), model.get_decoder()
    except (AttributeError, NotImplementedError):
        return None
    return head if head is not None and dec is not None else None


def _reduce_chunk(logits: Any, target: Any, st: TokenStats, *, ranks: bool, hist: bool) -> None:
    """Fold one chunk of logits [c, V] (any dtype) for targets [c] into ``st``."""
    import torch

    lg = logits.float()
    tgt = lg.gather(-1, target[:, None])  # [c, 1]
    bits = (torch.logsumexp(lg, -1) - tgt[:, 0]) / LN2
    require_finite(bits, "the scoring model's loss (NaN/Inf weights?)")  # never a NaN bpc
    st.nll_bits += float(bits.sum(dtype=torch.float64))
    if ranks:
        st.rank_sum += float(((lg > tgt).sum(-1) + 1).sum(dtype=torch.float64))
    if hist:
        idx = (bits.clamp(min=0) * _BINS_PER_BIT).long().clamp(max=_BINS_PER_BIT * _MAX_BITS).cpu().numpy()
        st.hist += np.bincount(idx, minlength=_BINS_PER_BIT * _MAX_BITS + 1)


def score_batch(model: Any, batch: list[Encoded], pad_id: int, *, chunk: int = 2048, ranks: bool = False,
                hist: bool = False) -> list[TokenStats]:
    """Per-record completion statistics for each encoded pair (left-padded, one decoder pass).

    Logits are formed ``chunk`` completion positions at a time (see the module doc)."""
    import torch

    L = max(len(e.ids) for e in batch)
    K = max(e.n_completion for e in batch) + 1
    dev = next(model.parameters()).device
    ids = torch.full((len(batch), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), L), dtype=torch.long)
    for i, e in enumerate(batch):
        ids[i, L - len(e.ids):] = torch.tensor(e.ids)
        mask[i, L - len(e.ids):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    stats = [TokenStats(hist=np.zeros(_BINS_PER_BIT * _MAX_BITS + 1, dtype=np.int64) if hist else None) for _ in batch]
    head = _plain_head(model)
    if head is None and len(batch) > 1:  # no decoder/head split: one record at a time keeps logits to one sequence
        return [score_batch(model, [e], pad_id, chunk=chunk, ranks=ranks, hist=hist)[0] for e in batch]
    with torch.inference_mode():
        kw = dict(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev))
        if head is not None:
            hidden = model.get_decoder()(**kw, use_cache=False).last_hidden_state[:, -K:]
        else:
            extra = {"logits_to_keep": K} if _accepts_logits_to_keep(type(model)) else {}
            logits_all = model(**kw, **extra).logits[:, -K:]
        for i, e in enumerate(batch):
            m = e.n_completion
            target = ids[i, L - m:].to(dev)
            for a in range(0, m, chunk):  # kept index j predicts position L - K + j + 1
                b = min(m, a + chunk)
                sl = slice(K - m - 1 + a, K - m - 1 + b)
                lg = head(hidden[i, sl]) if head is not None else logits_all[i, sl]
                _reduce_chunk(lg, target[a:b], stats[i], ranks=ranks, hist=hist)
    return stats


def _quantiles(hist: np.ndarray, qs: tuple[float, ...] = QUANTILES) -> dict[str, float]:
    """Quantiles (bin centres) of a surprisal histogram."""
    cdf = np.cumsum(hist) / max(1, hist.sum())
    return {f"q{round(100 * q)}": float((np.searchsorted(cdf, q) + 0.5) / _BINS_PER_BIT) for q in qs}


def _vocab_size(model: Any) -> int:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    w = getattr(head, "weight", None)
    return int(w.shape[0]) if w is not None else int(model.config.vocab_size)


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
    per: dict[int, TokenStats] = {}
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    want_rank, want_hist = "rsr" in cfg.metrics, "surprisal" in cfg.metrics
    for s in tqdm(range(0, len(encoded), cfg.batch_size), desc="bpc", unit="batch", disable=len(encoded) <= cfg.batch_size):
        chunk = encoded[s:s + cfg.batch_size]
        for (i, _), st in zip(chunk, score_batch(model, [e for _, e in chunk], pad, chunk=cfg.logits_chunk,
                                                 ranks=want_rank, hist=want_hist)):
            per[i] = st

    vocab = _vocab_size(model)
    log2v = math.log2(vocab)
    records = []
    for i, e in sorted(encoded, key=lambda x: x[0]):
        chars, st = len(completion_text(examples[i])), per[i]
        extra = {}
        if want_rank:
            mean_rank, mean_s = st.rank_sum / e.n_completion, st.nll_bits / e.n_completion
            extra = {"mean_rank": mean_rank, "rsr": mean_rank / mean_s if mean_s > 0 else float("inf")}
        records.append(BpcRecord(id=examples[i].id, chars=chars, tokens=e.n_completion, nll_bits=st.nll_bits,
                                 bpc=st.nll_bits / chars, bpt=st.nll_bits / e.n_completion, **extra))
    bpcs, bpts = [r.bpc for r in records], [r.bpt for r in records]
    chars_total, tokens_total = sum(r.chars for r in records), sum(r.tokens for r in records)
    summary = {
        "model": cfg.model,
        "data": cfg.data,
        "metrics": cfg.metrics,
        "n": len(records),
        "skipped_too_long": skipped,
        "boundary_retokenized": merged,
        "vocab_size": vocab,
        "bpc_mean": sum(bpcs) / len(bpcs),
        "bpc_char_weighted": sum(r.nll_bits for r in records) / chars_total,
        "bpc_ci95": _ci(bpcs, cfg.seed),
        "bpc_uniform": log2v * tokens_total / chars_total,
        "bpt_mean": sum(bpts) / len(bpts),
        "bpt_token_weighted": sum(r.nll_bits for r in records) / tokens_total,
        "bpt_ci95": _ci(bpts, cfg.seed),
        "bpt_uniform": log2v,
        "chars_total": chars_total,
        "tokens_total": tokens_total,
    }
    if want_rank:
        rsrs = [r.rsr for r in records]
        summary.update({
            "rsr_mean": sum(rsrs) / len(rsrs), "rsr_ci95": _ci(rsrs, cfg.seed),
            "rsr_pooled": (sum(per[i].rank_sum for i in per) / tokens_total) / (sum(r.nll_bits for r in records) / tokens_total),
            "rsr_uniform": ((vocab + 1) / 2) / log2v,
            "mean_rank": sum(per[i].rank_sum for i in per) / tokens_total, "mean_rank_uniform": (vocab + 1) / 2,
        })
    if want_hist:
        hist = sum(per[i].hist for i in per)
        summary["surprisal_bits_quantiles"] = _quantiles(hist)
        summary["surprisal_bits_uniform"] = log2v
    summary["wall_s"] = round(time.time() - t0, 3)
    if cfg.out:
        with atomic_dir(cfg.out) as tmp:
            write_jsonl_atomic(tmp / "bpc.jsonl", records)
            atomic_write_json(tmp / "summary.json", summary)
            write_manifest(tmp, stage="bpc", config=cfg, inputs={"model": cfg.model, "data": cfg.data},
                           counts={"records": len(records), "skipped_too_long": skipped}, started_at=t0)
    return summary
