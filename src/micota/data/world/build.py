"""Build a miniature world directory (:func:`build_world`) and read one back (:func:`load_world`).

Layout of ``W = build_world(WorldConfig(out=W))``::

    W/problems/{train,dev,test,hard}.jsonl Problem rows (source "world-<split>", meta = ops + knobs)
    W/traces/{short,mid,long}/data.jsonl   SftExample rows of the oracle's traces on the train split
                                           (each dir also has a manifest.json; usable by `micota train --data`)
    W/pretrain/data.jsonl                  the bases' pretraining corpus (see below)
    W/tokenizer/                           byte-level BPE (digits split) with a ChatML template
    W/configs/{student,ta}.json            tiny Qwen2 configs (random init via `micota train --from-config`)
    W/world.json                           lengths per style, the long:short token ratio, parameter counts,
                                           ``pretrain_corpus_hash`` (what the bases were trained on)
    W/manifest.json                        written last

Splits. ``train`` (the fine-tunes' problems), ``dev`` (merge search and any selection), ``test`` and
``hard`` (reported only) are drawn with ``seed``; the pretraining corpus is drawn first, from its own
``pretrain_seed``, and every later split excludes its problems. The corpus and the tokenizer (trained
on the corpus alone) therefore do not depend on ``seed``: worlds of every seed share one tokenizer and
one pair of System-1 bases, as real experiments share one pretrained base.

Pretraining corpus (``W/pretrain/data.jsonl``), two contexts (:func:`traces.care_trace` writes each step's
column work with probability min(1, 2c), its check — after worked or one-line steps — and the recap with
max(0, 2r − 1)):

- *default prompt* (no system message, what every later stage uses): every corpus problem once at care
  ``c ~ Beta(1, pretrain_care_beta)`` and reflection ``r = c`` (``pretrain_reflect_tied``). With β = 9 a
  step shows its work with probability 0.19 and a check needs care above 0.5 (probability 0.5⁹ ≈ 0.002;
  measured: 0.02% of the traces hold one): the base answers tersely and confidently, as an
  instruction-tuned LLM has a default style it rarely leaves.
- *cued* (:data:`traces.CUE_SYSTEM`): a share ``pretrain_cued`` of the problems (default 1: all) also gets a
  trace at c ~ U(0, 1) and, independently, r ~ U(0, 1) — every verbosity and every amount of checking and
  restating, decided step by step, so the skill (column work, inverse checks, recaps that copy earlier
  results) is learned as a graded rate in a context the default prompt does not share, as an LLM has
  seen verification far beyond what it writes by default.

With ``pretrain_reflect_tied: false`` the default context's r ~ Beta(1, pretrain_reflect_beta) instead
(the corpus of bases ``f0a059ec3de74cd4``: reflection common under the default prompt, so the merge
flipped it at low weight, docs/design/world.md). Optionally a share ``pretrain_mid``/``pretrain_long`` of
the problems also gets its mid/long trace behind that style's own system prompt (:data:`traces.STYLE_SYSTEM`;
default 0: styles learned as prompt-selected modes make the merge a switch). Corpus problems have
``min_ops..pretrain_max_ops`` operations (default 1..3, the hard split's range: pretraining is broader
than the fine-tunes).

``quick=True`` fills every knob the caller did not set from :data:`QUICK` (a smaller world, smaller
models, fewer pretraining steps) for CI and ``micota demo --quick``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from micota.config import StageConfig
from micota.data.world.problems import OPS, Knobs, generate_split, generate_splits
from micota.data.world.traces import CUE_SYSTEM, STYLE_SYSTEM, STYLES, care_trace, long_trace, write_trace
from micota.errors import UserError
from micota.io import atomic_dir, atomic_write_json
from micota.manifest import is_complete, read_manifest, write_manifest
from micota.records import Message, Problem, SftExample, read_jsonl, write_jsonl_atomic

SPLITS = ("train", "dev", "test", "hard")
ROLES = ("student", "ta")

QUICK: dict[str, Any] = {
    "n_train": 600, "n_dev": 40, "n_test": 60, "n_hard": 60, "n_pretrain": 600,
    "student_hidden": 64, "student_layers": 2, "student_intermediate": 192,
    "ta_hidden": 128, "ta_layers": 3, "ta_intermediate": 384,
    "student_steps": 800, "ta_steps": 800, "student_batch_size": 4, "ta_batch_size": 4,
}


class WorldConfig(StageConfig):
    out: Path = Field(description="Output world directory")
    seed: int = Field(0, description="Seed of the problem generator and of the oracle's slips")
    quick: bool = Field(False, description="Small preset (CI, demo --quick): knobs you do not set come from the quick preset")
    n_train: int = Field(3000, ge=1, description="Problems in the train split")
    n_dev: int = Field(100, ge=1, description="Problems in the dev split (merge search, selection; same distribution as train)")
    n_test: int = Field(200, ge=1, description="Problems in the test split (same distribution as train, disjoint)")
    n_hard: int = Field(200, ge=1, description="Problems in the hard split (more operations, more digits)")
    n_pretrain: int = Field(30000, ge=1, description="Problems in the bases' pretraining corpus (drawn with pretrain_seed)")
    pretrain_seed: int = Field(0, description="Seed of the pretraining corpus (and so of the tokenizer); independent of seed")
    pretrain_care_beta: float = Field(9.0, gt=0, description="Default-prompt corpus traces are written at care c ~ Beta(1, beta) (mean 1 / (1 + beta)); see traces.care_trace")
    pretrain_reflect_tied: bool = Field(True, description="Default-prompt corpus traces reflect at r = care (checks only with full work); false: r ~ Beta(1, pretrain_reflect_beta)")
    pretrain_reflect_beta: float = Field(1.0, gt=0, description="With pretrain_reflect_tied false: default-prompt reflection r ~ Beta(1, beta), independent of care")
    pretrain_cued: float = Field(1.0, ge=0, le=1, description="Share of corpus problems that also get a trace behind traces.CUE_SYSTEM at care and reflection ~ U(0, 1)")
    pretrain_max_ops: int = Field(3, ge=1, description="Most operations per corpus problem (fewest: min_ops)")
    pretrain_mid: float = Field(0.0, ge=0, le=1, description="Share of corpus problems that also get a mid trace behind its system prompt")
    pretrain_long: float = Field(0.0, ge=0, le=1, description="Share of corpus problems that also get a long trace behind its system prompt")
    min_ops: int = Field(1, ge=1, description="Fewest operations per train/test problem")
    max_ops: int = Field(2, ge=1, description="Most operations per train/test problem")
    digits: int = Field(3, ge=1, le=6, description="Digits of the start value (train/test)")
    operand_digits: int = Field(2, ge=1, le=6, description="Most digits of an add/sub operand (train/test)")
    mul_max: int = Field(9, ge=2, le=9, description="Largest multiplier/divisor (train/test)")
    hard_min_ops: int = Field(2, ge=1, description="Fewest operations per hard problem")
    hard_max_ops: int = Field(3, ge=1, description="Most operations per hard problem")
    hard_digits: int = Field(3, ge=1, le=6, description="Digits of the start value in the hard split")
    hard_operand_digits: int = Field(2, ge=1, le=6, description="Most digits of an add/sub operand in the hard split")
    hard_mul_max: int = Field(9, ge=2, le=9, description="Largest multiplier/divisor in the hard split")
    ops: list[str] = Field(default_factory=lambda: list(OPS), description="Operations used (add, sub, mul, div)")
    slip_rate: float = Field(0.08, ge=0, lt=1, description="Long traces: chance of a (corrected) slip per digit step and per operation")
    vocab_size: int = Field(768, ge=300, description="Tokenizer vocabulary size (an upper bound: BPE stops when merges run out)")
    student_hidden: int = Field(96, ge=8, description="Student hidden size")
    student_layers: int = Field(4, ge=1, description="Student layers")
    student_intermediate: int = Field(256, ge=8, description="Student MLP size")
    student_heads: int = Field(4, ge=1, description="Student attention heads (kv heads = half)")
    ta_hidden: int = Field(128, ge=8, description="TA hidden size")
    ta_layers: int = Field(4, ge=1, description="TA layers")
    ta_intermediate: int = Field(384, ge=8, description="TA MLP size")
    ta_heads: int = Field(4, ge=1, description="TA attention heads (kv heads = half)")
    student_steps: int = Field(1500, ge=1, description="Base pretraining: student optimizer steps")
    ta_steps: int = Field(1500, ge=1, description="Base pretraining: TA optimizer steps (same tokens as the student: the TA is the stronger model)")
    student_lr: float = Field(3e-3, gt=0, description="Base pretraining: student peak learning rate")
    ta_lr: float = Field(2e-3, gt=0, description="Base pretraining: TA peak learning rate")
    student_batch_size: int = Field(16, ge=1, description="Base pretraining: student packed sequences per step")
    ta_batch_size: int = Field(16, ge=1, description="Base pretraining: TA packed sequences per step")
    overwrite: bool = Field(False, description="Replace an existing complete world at OUT")

    @model_validator(mode="before")
    @classmethod
    def _quick_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("quick"):
            data = {**QUICK, **data}
        return data

    def knobs(self) -> dict[str, Knobs]:
        base = Knobs(self.min_ops, self.max_ops, self.digits, self.mul_max, tuple(self.ops), self.operand_digits)
        hard = Knobs(self.hard_min_ops, self.hard_max_ops, self.hard_digits, self.hard_mul_max, tuple(self.ops),
                     self.hard_operand_digits)
        return {"train": base, "dev": base, "test": base, "hard": hard}

    def pretrain_knobs(self) -> Knobs:
        return Knobs(self.min_ops, max(self.max_ops, self.pretrain_max_ops), self.digits, self.mul_max, tuple(self.ops),
                     self.operand_digits)

    def model_shape(self, role: str) -> dict[str, int]:
        heads = getattr(self, f"{role}_heads")
        return {"hidden": getattr(self, f"{role}_hidden"), "layers": getattr(self, f"{role}_layers"),
                "intermediate": getattr(self, f"{role}_intermediate"), "heads": heads, "kv_heads": max(1, heads // 2)}


@dataclass
class World:
    """A loaded world: directory, problems per split, tokenizer, its config."""

    dir: Path
    problems: dict[str, list[Problem]]
    tokenizer: Any
    config: WorldConfig

    @property
    def slip_rate(self) -> float:
        return self.config.slip_rate


def load_world_tokenizer(world_dir: str | Path) -> Any:
    from micota.models import load_tokenizer

    return load_tokenizer(Path(world_dir) / "tokenizer")


def load_world(world_dir: str | Path) -> World:
    """Read a finished world (complete manifest required)."""
    d = Path(world_dir)
    if not d.is_dir():
        raise UserError(f"{d}: no such world directory")
    man = read_manifest(d)
    if not (man and man.get("complete") and man.get("stage") == "world"):
        raise UserError(f"{d}: not a finished miniature world (no complete world manifest.json)")
    cfg = WorldConfig.build(man["config"], prefix=str(d / "manifest.json"))
    problems = {s: read_jsonl(d / "problems" / f"{s}.jsonl", Problem) for s in SPLITS}
    return World(d, problems, load_world_tokenizer(d), cfg)


def sft_example(p: Problem, style: str, text: str, *, system: str | None = None, **meta: Any) -> SftExample:
    from micota.generation.prompts import build_messages

    prompt = [Message(**m) for m in build_messages(p.problem, system=system)]
    return SftExample(id=f"{p.id}-{style}", problem_id=p.id, prompt=prompt,
                      completion=[Message(role="assistant", content=text)], meta={"style": style, **meta})


def pretrain_corpus(cfg: WorldConfig, problems: list[Problem]) -> list[SftExample]:
    """The bases' corpus: every problem once under the default prompt at care c ~ Beta(1, pretrain_care_beta)
    and reflection r = c (r ~ Beta(1, pretrain_reflect_beta) unless pretrain_reflect_tied), a share
    pretrain_cued again behind the cue at c, r ~ U(0, 1), plus the optional mid/long shares behind their
    system prompts (see the module docstring)."""
    import random

    rng = random.Random(f"{cfg.pretrain_seed}-pretrain-mix")
    cue_rng = random.Random(f"{cfg.pretrain_seed}-pretrain-cue")  # its own stream: cued = 0 leaves the other rows as they were
    rows = []
    for p in problems:
        if cfg.pretrain_cued and cue_rng.random() < cfg.pretrain_cued:
            c, r = cue_rng.random(), cue_rng.random()
            text = care_trace(p.meta, c, reflect=r, seed=f"{cfg.pretrain_seed}-cue", slip_rate=cfg.slip_rate, problem_id=p.id)
            rows.append(sft_example(p, "cued", text, system=CUE_SYSTEM, care=round(c, 4), reflect=round(r, 4)))
        care = rng.betavariate(1.0, cfg.pretrain_care_beta)
        reflect = care if cfg.pretrain_reflect_tied else rng.betavariate(1.0, cfg.pretrain_reflect_beta)
        text = care_trace(p.meta, care, reflect=reflect, seed=cfg.pretrain_seed, slip_rate=cfg.slip_rate, problem_id=p.id)
        rows.append(sft_example(p, "graded", text, care=round(care, 4), reflect=round(reflect, 4)))
        for style, share in (("mid", cfg.pretrain_mid), ("long", cfg.pretrain_long)):
            if share and rng.random() < share:
                text = write_trace(style, p.meta, seed=cfg.pretrain_seed, slip_rate=cfg.slip_rate, problem_id=p.id)
                rows.append(sft_example(p, style, text, system=STYLE_SYSTEM[style]))
    rng.shuffle(rows)
    return rows


def _tokenizer_texts(corpus: list[SftExample]) -> list[str]:
    """The tokenizer is trained on the pretraining corpus alone, so it does not depend on ``seed``."""
    texts = [m.content for ex in corpus for m in ex.prompt + ex.completion]
    texts += ["user\n", "assistant\n", "system\n"] * 50 + list(STYLE_SYSTEM.values()) * 20 + [CUE_SYSTEM] * 20
    return [t for t in texts if t]


def count_params(config: Any) -> int:
    import torch
    from transformers import Qwen2ForCausalLM

    with torch.device("meta"):
        return sum(p.numel() for p in Qwen2ForCausalLM(config).parameters())


def _length_stats(tok: Any, traces: dict[str, dict[str, str]], ids: list[str]) -> dict[str, Any]:
    lens = {s: [len(tok(traces[i][s], add_special_tokens=False)["input_ids"]) for i in ids] for s in STYLES}
    out: dict[str, Any] = {s: {"mean_tokens": round(statistics.fmean(v), 2), "max_tokens": max(v)} for s, v in lens.items()}
    out["long_short_ratio"] = round(out["long"]["mean_tokens"] / out["short"]["mean_tokens"], 3)
    out["mid_short_ratio"] = round(out["mid"]["mean_tokens"] / out["short"]["mean_tokens"], 3)
    return out


def corpus_hash(world_dir: str | Path) -> str:
    """sha256 over what the bases are trained from: the corpus rows, the tokenizer's model (vocabulary,
    merges) and added tokens, and both model configs — read as content, so a library version that
    writes the same things differently (``transformers_version``, key order) keeps the hash."""
    from micota.io import dumps_canonical, read_json, sha256_file, sha256_text

    d = Path(world_dir)
    tok = read_json(d / "tokenizer" / "tokenizer.json")
    configs = {r: {k: v for k, v in read_json(d / "configs" / f"{r}.json").items() if k != "transformers_version"} for r in ROLES}
    return sha256_text(dumps_canonical({"corpus": sha256_file(d / "pretrain" / "data.jsonl"), "configs": configs,
                                        "tokenizer": {"model": tok.get("model"), "added_tokens": tok.get("added_tokens")}}))


def build_world(cfg: WorldConfig) -> Path:
    """Write the world directory described in the module docstring; returns it."""
    from micota.generation.prompts import render_prompt
    from micota.models.tiny import tiny_qwen2_config, train_chatml_tokenizer

    t0 = time.time()
    out = Path(cfg.out)
    if is_complete(out) and not cfg.overwrite:
        raise UserError(f"{out}: a finished world already exists (pass --overwrite or choose another --out)")
    sizes = {"train": cfg.n_train, "dev": cfg.n_dev, "test": cfg.n_test, "hard": cfg.n_hard}
    for k in cfg.knobs().values():
        k.check()
    seen: set = set()
    cfg.pretrain_knobs().check()
    corpus_problems = generate_split("pretrain", cfg.n_pretrain, cfg.pretrain_knobs(), seed=cfg.pretrain_seed, exclude=seen)
    problems = generate_splits(sizes, cfg.knobs(), seed=cfg.seed, exclude=seen)
    traces: dict[str, dict[str, str]] = {}
    slips: dict[str, int] = {}
    for ps in problems.values():
        for p in ps:
            traces[p.id] = {s: write_trace(s, p.meta) for s in STYLES if s != "long"}
            traces[p.id]["long"], slips[p.id] = long_trace(p.meta, seed=cfg.seed, slip_rate=cfg.slip_rate,
                                                           problem_id=p.id, return_slips=True)
    corpus = pretrain_corpus(cfg, corpus_problems)
    tok = train_chatml_tokenizer(_tokenizer_texts(corpus), vocab_size=cfg.vocab_size, split_digits=True)
    configs = {r: tiny_qwen2_config(tok, max_positions=2048, **cfg.model_shape(r)) for r in ROLES}
    params = {r: count_params(c) for r, c in configs.items()}
    stats = {split: _length_stats(tok, traces, [p.id for p in ps]) for split, ps in problems.items()}
    prompt_tokens = statistics.fmean(len(tok(render_prompt(tok, sft_example(p, "x", "").prompt))["input_ids"])
                                     for p in problems["train"][:200])
    with atomic_dir(out, overwrite=True) as tmp:
        for split, ps in problems.items():
            write_jsonl_atomic(tmp / "problems" / f"{split}.jsonl", ps)
        for style in STYLES:
            d = tmp / "traces" / style
            rows = [sft_example(p, style, traces[p.id][style], **({"slips": slips[p.id]} if style == "long" else {}))
                    for p in problems["train"]]
            write_jsonl_atomic(d / "data.jsonl", rows)
            write_manifest(d, stage="world-traces", config={"style": style, "split": "train", "seed": cfg.seed},
                           counts={"examples": len(rows), "mean_tokens": stats["train"][style]["mean_tokens"]})
        write_jsonl_atomic(tmp / "pretrain" / "data.jsonl", corpus)
        write_manifest(tmp / "pretrain", stage="world-pretrain-corpus",
                       config={"seed": cfg.pretrain_seed, "n": cfg.n_pretrain, "care_beta": cfg.pretrain_care_beta,
                               "reflect_beta": None if cfg.pretrain_reflect_tied else cfg.pretrain_reflect_beta,
                               "max_ops": cfg.pretrain_max_ops, "cued": cfg.pretrain_cued, "mid": cfg.pretrain_mid, "long": cfg.pretrain_long},
                       counts={"examples": len(corpus), **{s: sum(ex.meta["style"] == s for ex in corpus) for s in ("graded", "cued", "mid", "long")}})
        tok.save_pretrained(tmp / "tokenizer")
        for r, c in configs.items():
            (tmp / "configs").mkdir(exist_ok=True)
            c.to_json_file(tmp / "configs" / f"{r}.json")
        info = {"params": params, "vocab_size": len(tok), "lengths": stats, "mean_prompt_tokens": round(prompt_tokens, 2),
                "long_slips": {"mean_per_trace": round(statistics.fmean(slips.values()), 3),
                               "traces_with_a_slip": round(sum(v > 0 for v in slips.values()) / len(slips), 3)},
                "pretrain_corpus": {"examples": len(corpus), "hash": corpus_hash(tmp)},
                "build_s": round(time.time() - t0, 2)}
        atomic_write_json(tmp / "world.json", info)
        write_manifest(tmp, stage="world", config=cfg, counts=sizes, extra=info, started_at=t0)
    return out
