"""The System-1 bases: the world's student and TA trained from random init on the world's corpus.

:func:`pretrain_bases` runs the real SFT stage (:func:`micota.training.train` with
``from_config = W/configs/<role>.json``, ``tokenizer = W/tokenizer``, data ``W/pretrain``: short
traces under the default prompt, mid and long traces behind their own system prompts) for each
role, then measures greedy accuracy on the world's test (and hard) problems through the real
generation runner and grader (``default`` mode: last ``\\boxed{}``), under the default prompt and
under each style's system prompt (``accuracy_<split>`` and ``accuracy_<split>_<style>``). Output::

    OUT/student/, OUT/ta/          HF model folders (each with its own train manifest)
    OUT/eval/<role>-<split>/       generate outputs (Sample rows) of the accuracy check
    OUT/pretrain_report.json       per role: params, steps, lr, wall time, final loss, accuracy per split
    OUT/manifest.json              written last

Steps, learning rates and batch sizes default to the world's config (so ``quick`` worlds pretrain
quickly). A role whose folder is already complete is not retrained, so a killed run resumes.

Reuse. Bases are built once: :func:`bases_key` hashes what they are trained from (the world's
corpus + tokenizer + model configs, :func:`micota.data.world.build.corpus_hash`) and how (roles,
steps, learning rates, batch sizes, seed, packing and its strategy, length). Before training, ``pretrain_bases``
looks for a finished set under that key in the bases shipped with micota (:data:`SHIPPED`), then in
the user cache (``$MICOTA_CACHE/bases`` or ``~/.cache/micota/bases``), and copies it (the manifest
records ``reused_from``; ``pretrain_report.json`` is the one measured when the set was built). A set
it trains is stored in the cache. ``reuse: false`` always trains.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from micota.config import StageConfig
from micota.errors import UserError
from micota.io import atomic_write_json
from micota.manifest import is_complete, write_manifest

ROLES = ("student", "ta")
SHIPPED = Path(__file__).resolve().parent / "bases"


class PretrainConfig(StageConfig):
    world: str = Field(description="World directory (from `micota world build`)")
    out: str = Field(description="Output directory: OUT/student, OUT/ta, pretrain_report.json")
    roles: list[str] = Field(default_factory=lambda: list(ROLES), description="Which bases to train (student, ta)")
    student_steps: int | None = Field(None, ge=1, description="Student optimizer steps (default: the world's)")
    ta_steps: int | None = Field(None, ge=1, description="TA optimizer steps (default: the world's)")
    student_lr: float | None = Field(None, gt=0, description="Student peak learning rate (default: the world's)")
    ta_lr: float | None = Field(None, gt=0, description="TA peak learning rate (default: the world's)")
    student_batch_size: int | None = Field(None, ge=1, description="Student examples per step (default: the world's)")
    ta_batch_size: int | None = Field(None, ge=1, description="TA examples per step (default: the world's)")
    eval_splits: list[str] = Field(default_factory=lambda: ["test"], description="Splits whose greedy accuracy is measured (test, hard)")
    eval_limit: int = Field(100, ge=0, description="Problems per split for the accuracy check (0 = skip it)")
    max_new_tokens: int = Field(160, ge=1, description="Generation limit of the accuracy check (default prompt)")
    style_max_new_tokens: int = Field(1024, ge=1, description="Generation limit of the per-style checks (mid, long system prompts)")
    eval_styles: list[str] = Field(default_factory=list, description="Styles whose system prompt is also checked (only meaningful when the world pretrains them: pretrain_mid / pretrain_long > 0)")
    seed: int = Field(0, description="Init and data-order seed")
    keep_checkpoints: bool = Field(False, description="Keep the intermediate checkpoints (to study the learning curve)")
    packing: bool = Field(True, description="Pack corpus examples into max_length sequences (batch size = packed sequences)")
    packing_strategy: Literal["bfd", "wrapped"] = Field(
        "wrapped", description="wrapped: the corpus concatenated and cut into max_length rows, as LLMs are pretrained (and "
        "7x the tokens/s of bfd at 16 x 640 tokens on CPU, whose padding-free row has attention quadratic in batch x length; "
        "BENCHMARKS.md)")
    max_length: int = Field(640, ge=16, description="Tokens per (packed) training sequence")
    reuse: bool = Field(True, description="Copy a finished set of bases with the same key from the shipped ones or the cache instead of training")


def _train_role(cfg: PretrainConfig, world, role: str, out: Path) -> dict:
    from micota.training import TrainConfig, train

    steps = getattr(cfg, f"{role}_steps") or getattr(world.config, f"{role}_steps")
    lr = getattr(cfg, f"{role}_lr") or getattr(world.config, f"{role}_lr")
    bs = getattr(cfg, f"{role}_batch_size") or getattr(world.config, f"{role}_batch_size")
    dest = out / role
    if not is_complete(dest):
        train(TrainConfig(data=str(world.dir / "pretrain"), out=str(dest), tokenizer=str(world.dir / "tokenizer"),
                          from_config=str(world.dir / "configs" / f"{role}.json"), lr=lr, max_steps=steps, batch_size=bs,
                          max_length=cfg.max_length, packing=cfg.packing, packing_strategy=cfg.packing_strategy,
                          warmup_ratio=0.1, lr_scheduler="cosine", weight_decay=0.0, seed=cfg.seed,
                          resume=True, save_steps=250, logging_steps=25, keep_checkpoints=cfg.keep_checkpoints))
    from micota.io import read_json

    rep = read_json(dest / "train_report.json")
    curve = rep.get("loss_curve") or [{"loss": rep.get("train_loss")}]
    return {"steps": steps, "lr": lr, "batch_size": bs, "train_wall_s": rep.get("wall_s"),
            "final_loss": curve[-1]["loss"], "params": read_json(world.dir / "world.json")["params"][role]}


def measure_accuracy(model: str | Path, problems: str | Path, out: str | Path, *, limit: int | None,
                     max_new_tokens: int = 160, batch_size: int = 32, system: str | None = None) -> dict:
    """Greedy generation through the real runner, graded in ``default`` mode: accuracy, mean tokens,
    truncation rate (a truncated completion counts as wrong)."""
    from micota.generation.runner import GenerateConfig, generate, load_samples
    from micota.grading import grade_samples

    d = generate(GenerateConfig(model=str(model), problems=str(problems), out=Path(out), limit=limit, system=system,
                                max_new_tokens=max_new_tokens, batch_size=batch_size, temperature=0.0))
    graded = grade_samples(load_samples(d), "default")
    ok = [bool(s.correct) and s.finish_reason == "stop" for s in graded]
    return {"n": len(graded), "accuracy": round(sum(ok) / len(ok), 4),
            "mean_completion_tokens": round(statistics.fmean(s.completion_tokens for s in graded), 2),
            "truncated": round(sum(s.finish_reason == "length" for s in graded) / len(graded), 4)}


def _resolved(cfg: PretrainConfig, world) -> dict:
    keys = ("steps", "lr", "batch_size")
    return {role: {k: getattr(cfg, f"{role}_{k}") or getattr(world.config, f"{role}_{k}") for k in keys} for role in cfg.roles}


def bases_key(cfg: PretrainConfig, world) -> str:
    """What a set of bases is a function of (see the module docstring); 16 hex digits."""
    from micota.data.world.build import corpus_hash
    from micota.io import dumps_canonical, sha256_text

    return sha256_text(dumps_canonical({"corpus": corpus_hash(world.dir), "roles": _resolved(cfg, world), "seed": cfg.seed,
                                        "packing": cfg.packing, "packing_strategy": cfg.packing_strategy,
                                        "max_length": cfg.max_length}))[:16]


def cache_root() -> Path:
    import os

    return Path(os.environ.get("MICOTA_CACHE") or Path.home() / ".cache" / "micota") / "bases"


def find_bases(key: str) -> Path | None:
    """A finished set of bases under ``key``: shipped first, then the user cache."""
    for root in (SHIPPED, cache_root()):
        if is_complete(root / key):
            return root / key
    return None


def _copy_set(src: Path, dest: Path) -> None:
    import shutil

    from micota.io import atomic_dir

    with atomic_dir(dest, overwrite=True) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)


def pretrain_bases(cfg: PretrainConfig) -> Path:
    """Train the bases named in ``cfg.roles`` and check their accuracy; returns OUT."""
    from micota.data.world.build import load_world

    t0 = time.time()
    bad = [r for r in cfg.roles if r not in ROLES] + [s for s in cfg.eval_splits if s not in ("train", "dev", "test", "hard")]
    if bad:
        raise UserError(f"unknown role or split {bad[0]!r} (roles: student, ta; splits: train, test, hard)")
    world = load_world(cfg.world)
    out = Path(cfg.out)
    if is_complete(out):
        raise UserError(f"{out}: finished bases already exist (remove it or choose another --out)")
    key = bases_key(cfg, world)
    found = find_bases(key) if cfg.reuse else None
    if found:
        from micota.io import read_json

        _copy_set(found, out)
        write_manifest(out, stage="pretrain", config=cfg, inputs={"world": world.dir}, started_at=t0,
                       counts={"models": len(cfg.roles)}, extra={"key": key, "reused_from": str(found),
                                                                 "built": read_json(found / "manifest.json").get("config")})
        return out
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"world": str(world.dir), "key": key, "models": {}}
    for role in cfg.roles:
        t = time.time()
        info = _train_role(cfg, world, role, out)
        if cfg.eval_limit:
            from micota.data.world.traces import STYLE_SYSTEM

            for split in cfg.eval_splits:
                probs = world.dir / "problems" / f"{split}.jsonl"
                info[f"accuracy_{split}"] = measure_accuracy(out / role, probs, out / "eval" / f"{role}-{split}",
                                                             limit=cfg.eval_limit, max_new_tokens=cfg.max_new_tokens)
                for style in cfg.eval_styles:
                    info[f"accuracy_{split}_{style}"] = measure_accuracy(
                        out / role, probs, out / "eval" / f"{role}-{split}-{style}", limit=cfg.eval_limit,
                        max_new_tokens=cfg.style_max_new_tokens, system=STYLE_SYSTEM[style])
        info["wall_s"] = round(time.time() - t, 2)
        report["models"][role] = info
    report["wall_s"] = round(time.time() - t0, 2)
    atomic_write_json(out / "pretrain_report.json", report)
    write_manifest(out, stage="pretrain", config=cfg, inputs={"world": world.dir}, started_at=t0,
                   counts={"models": len(cfg.roles)},
                   extra={"key": key, "accuracy": {r: {k: v["accuracy"] for k, v in m.items() if k.startswith("accuracy_")}
                                                   for r, m in report["models"].items()}})
    if cfg.reuse:
        try:
            _copy_set(out, cache_root() / key)
        except OSError as e:  # a read-only home is no reason to fail a finished stage
            print(f"warning: could not cache the bases in {cache_root()}: {e}")
    return out
