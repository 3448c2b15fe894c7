"""Supervised fine-tuning through TRL's SFTTrainer (single process, torchrun, accelerate/DeepSpeed).

Flow of :func:`train`:

1. Pre-flight (:func:`preflight`): every example is rendered with
   :func:`micota.generation.prompts.render_conversation` (prompt string + completion + EOS, the
   same rendering generate and bpc use) and tokenized with :func:`~micota.training.data.encode_pair`.
   It fails loudly if the chat template does not round-trip (rendering the whole conversation must
   start with the rendered prompt followed by the completion) or an example has zero supervised
   tokens. Examples longer than ``max_length`` are dropped and counted, never truncated; if all are
   over, it is an error.
2. TRL trains on the pre-tokenized ``input_ids`` + ``completion_mask`` with
   ``completion_only_loss=True`` (loss on completion tokens only), ``max_length`` given to TRL only to pack to
   (without packing TRL gets none: pre-flight already dropped longer examples, so its "Truncating" pass is skipped),
   optional packing (``bfd``: best-fit decreasing, padding-free positions so packed examples do not attend
   to each other; ``wrapped``: concatenated and cut into max_length rows, as in LLM pretraining — on CPU
   the padding-free row makes attention quadratic in batch × length, so the world's bases use ``wrapped``), cosine schedule with warmup, resumable checkpoints in ``.OUT.checkpoints``.
3. The final model (LoRA merged into full weights) goes to ``.OUT.partial`` and is renamed to OUT
   after ``train_report.json``, ``loss.png`` and ``manifest.json`` (last). Only rank 0 writes.

Debug hook: with ``MICOTA_TRAIN_TRACE_DIR`` set, each rank writes the example ids it trained on to
``rank<R>.json`` there (tests use it to check data-parallel coverage).
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from micota.errors import UserError
from micota.generation.prompts import render_conversation
from micota.io import atomic_write_json, os_errors_from_writers
from micota.manifest import write_manifest
from micota.models import load_model, load_tokenizer, resolve_model
from micota.models.load import safetensors_problem
from micota.records import SftExample
from micota.training.config import TrainConfig
from micota.training.data import check_template, completion_text, encode_pair, read_sft_dataset, read_template

TRACE_ENV = "MICOTA_TRAIN_TRACE_DIR"


def _template_roundtrips(tok: Any, ex: SftExample, prompt: str, text: str, template: str | None) -> bool:
    msgs = [m.model_dump() for m in ex.prompt] + [{"role": "assistant", "content": text}]
    full = tok.apply_chat_template(msgs, tokenize=False, chat_template=template or tok.chat_template)
    return full.startswith(prompt) and full[len(prompt):].lstrip().startswith(text.strip())


def preflight(tok: Any, examples: list[SftExample], *, max_length: int, use_chat_template: bool = True,
              template: str | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Render + tokenize every example; return (rows for TRL, counts). See the module docstring."""
    rows: list[dict[str, Any]] = []
    dropped: list[str] = []
    merged = 0
    shortest_over = None
    for ex in examples:
        text = completion_text(ex)
        prompt, completion = render_conversation(tok, ex.prompt, text, use_chat_template=use_chat_template, template=template)
        if use_chat_template and not _template_roundtrips(tok, ex, prompt, text, template):
            raise UserError(
                f"example {ex.id!r}: the chat template does not round-trip (rendering prompt+completion does not start "
                "with the rendered prompt followed by the completion); pass a --template that renders both the same way"
            )
        enc = encode_pair(tok, prompt, completion)
        if enc.n_completion == 0:
            raise UserError(f"example {ex.id!r} has zero supervised tokens after tokenization")
        merged += enc.merged
        if len(enc.ids) > max_length:
            dropped.append(ex.id)
            shortest_over = min(shortest_over or len(enc.ids), len(enc.ids))
            continue
        rows.append({"input_ids": enc.ids, "completion_mask": [0] * enc.n_prompt + [1] * enc.n_completion, "id": ex.id})
    if not rows:
        raise UserError(f"every example is longer than --max-length {max_length} tokens (shortest: {shortest_over}); nothing to train on")
    counts = {
        "examples_total": len(examples),
        "examples_used": len(rows),
        "dropped_too_long": len(dropped),
        "dropped_ids_sample": dropped[:20],
        "boundary_retokenized": merged,
        "tokens_per_epoch": sum(len(r["input_ids"]) for r in rows),
        "supervised_tokens_per_epoch": sum(sum(r["completion_mask"]) for r in rows),
    }
    return rows, counts


def _use_bf16(cfg: TrainConfig) -> bool:
    import torch

    if cfg.bf16 == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return cfg.bf16 == "true"


def _build_model(cfg: TrainConfig, tok: Any) -> Any:
    """fp32 master weights (bf16 is autocast): pure-bf16 AdamW loses lr-1e-5 updates to rounding."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if cfg.from_config:
        p = Path(cfg.from_config)
        if not p.is_file():
            raise UserError(f"{p}: config file not found")
        try:
            mcfg = AutoConfig.from_pretrained(str(p))
        except (OSError, ValueError) as e:
            raise UserError(f"{p}: not a model config ({str(e).splitlines()[0]})") from None
        if getattr(mcfg, "vocab_size", len(tok)) < len(tok):
            raise UserError(f"{p}: vocab_size {mcfg.vocab_size} is smaller than the tokenizer's {len(tok)}")
        torch.manual_seed(cfg.seed)
        return AutoModelForCausalLM.from_config(mcfg, dtype=torch.float32)
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():  # ZeRO-3 partitions weights while loading; no .to(device) afterwards
        return AutoModelForCausalLM.from_pretrained(resolve_model(cfg.base), dtype=torch.float32, use_safetensors=True)
    return load_model(cfg.base, dtype="float32", device="cpu")


def _make_trainer_class() -> type:
    from trl import SFTTrainer

    class MicotaSFTTrainer(SFTTrainer):
        """SFTTrainer that counts tokens/supervised tokens and, when tracing, which examples it saw."""

        micota_ids: dict[tuple[int, ...], str] | None = None

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            ids, labels = inputs["input_ids"], inputs["labels"]
            if "attention_mask" in inputs:
                self.micota_tokens += int(inputs["attention_mask"].sum())
            else:
                self.micota_tokens += int(ids.numel())
            self.micota_supervised += int((labels != -100).sum())
            if self.micota_ids is not None and model.training:
                self._trace(inputs)
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

        def _trace(self, inputs: dict) -> None:
            ids = inputs["input_ids"].tolist()
            if "attention_mask" in inputs:
                seqs = [[t for t, m in zip(row, mask) if m] for row, mask in zip(ids, inputs["attention_mask"].tolist())]
            else:  # padding-free: split the flat row at position 0
                seqs, pos = [], inputs["position_ids"].tolist()
                for row, prow in zip(ids, pos):
                    for t, p in zip(row, prow):
                        if p == 0:
                            seqs.append([])
                        seqs[-1].append(t)
            self.micota_seen.extend(self.micota_ids.get(tuple(s), "?") for s in seqs)

    return MicotaSFTTrainer


def _no_final_checkpoint_callback(stop_after: int | None = None) -> Any:
    """Skip the checkpoint Trainer writes at the last step (the final model is saved right after);
    for big models that checkpoint is the whole optimizer state. With ``stop_after``, end training
    after that many steps without changing the schedule (``TrainConfig.stop_after_steps``)."""
    from transformers import TrainerCallback

    class NoFinalCheckpoint(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
            if stop_after and state.global_step >= stop_after:
                control.should_training_stop = True
            if state.global_step >= state.max_steps and state.global_step % args.save_steps:
                control.should_save = False
            return control

    return NoFinalCheckpoint()


def _checkpoint_problem(ckpt: Path) -> str | None:
    """Why a checkpoint folder cannot be resumed from (unreadable state, torn weights), or None."""
    import json
    import zipfile

    try:
        json.loads((ckpt / "trainer_state.json").read_text())
    except (OSError, ValueError) as e:
        return f"trainer_state.json: {type(e).__name__}"
    for p in sorted(ckpt.iterdir()):
        if p.suffix == ".safetensors" and (why := safetensors_problem(p)):
            return f"{p.name}: {why}"
        if p.suffix in (".pt", ".pth", ".bin") and p.name != "training_args.bin" and not zipfile.is_zipfile(p):
            return f"{p.name}: not a complete torch archive"
    return None


def _log_line_callback() -> Any:
    """When stderr is not a terminal (Slurm logs, CI, ``2> log``): one line per logging step on
    stderr — ``train step 8/16 (50%) loss 2.310 lr 4.1e-05 grad_norm 1.2 · 12 s elapsed, ETA 12 s``
    — instead of tqdm redraws or Trainer's bare dict on stdout."""
    import sys

    from transformers import TrainerCallback

    class LogLine(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
            self.t0, self.step0 = time.time(), state.global_step
            if state.is_world_process_zero and state.global_step:
                print(f"train: resuming at step {state.global_step}/{state.max_steps}", file=sys.stderr, flush=True)

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001, ANN201
            if not state.is_world_process_zero or not logs or "loss" not in logs:
                return
            step, total = state.global_step, state.max_steps
            spent = time.time() - self.t0
            done = max(step - self.step0, 1)
            eta = spent / done * max(total - step, 0)
            vals = " ".join(f"{k} {v:.4g}" for k, v in logs.items() if k in ("loss", "learning_rate", "grad_norm"))
            print(f"train step {step}/{total} ({100 * step / max(total, 1):.0f}%) {vals} · "
                  f"{spent:.0f} s elapsed, ETA {eta:.0f} s", file=sys.stderr, flush=True)

    return LogLine()


def _last_checkpoint(ckpt_dir: Path) -> str | None:
    """The Trainer's newest intact ``checkpoint-<step>`` folder, if any; a corrupt newer one (a
    kill or full disk while saving) is reported and skipped, so resume falls back to the previous."""
    found = [p for p in ckpt_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()]
    for p in sorted(found, key=lambda p: -int(p.name.split("-")[-1])):
        why = _checkpoint_problem(p)
        if why is None:
            return str(p)
        print(f"warning: {p}: skipping a corrupt checkpoint ({why}); resuming from an earlier one", file=sys.stderr, flush=True)
    return None


@contextlib.contextmanager
def _one_line_write_failures(out: Path, partial: Path | None) -> Any:
    """A full or read-only disk while saving a checkpoint or the final model is an ``OSError`` (one
    ``error:`` line on the CLI, see :func:`micota.io.write_error`); on any failure the half-written
    final model (``partial``, rank 0's) is removed, so nothing that looks complete is left."""
    try:
        with os_errors_from_writers(out):
            yield
    except BaseException:
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)
        raise


def _plot_loss(curve: list[dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([c["step"] for c in curve], [c["loss"] for c in curve], marker="o", ms=2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("train loss (completion tokens)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train(cfg: TrainConfig) -> Path:
    """Fine-tune BASE (or a random init of --from-config) on DATASET; return the output model folder."""
    t0 = time.time()
    out = Path(cfg.out)
    if (cfg.base is None) == (cfg.from_config is None):
        raise UserError("give exactly one of BASE or --from-config")
    if cfg.from_config and not cfg.tokenizer:
        raise UserError("--from-config needs --tokenizer (a model spec whose tokenizer to use)")
    if out.exists():
        raise UserError(f"{out}: output already exists (remove it or choose another path)")
    ckpt_dir, partial = Path(cfg.checkpoint_dir()), out.parent / f".{out.name}.partial"
    last = _last_checkpoint(ckpt_dir)
    if last and not cfg.resume:
        raise UserError(f"{ckpt_dir}: checkpoints of an earlier run exist: pass --resume to continue, or remove it")

    examples = read_sft_dataset(cfg.data)  # bad rows fail before anything heavy is imported
    template = read_template(cfg.template)
    tok = load_tokenizer(cfg.tokenizer or cfg.base)
    check_template(tok, use_chat_template=cfg.use_chat_template, template=template)
    rows, counts = preflight(tok, examples, max_length=cfg.max_length, use_chat_template=cfg.use_chat_template, template=template)

    import torch
    from datasets import Dataset
    from trl import SFTConfig

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    args = SFTConfig(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of total steps
        weight_decay=cfg.weight_decay,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        save_strategy="steps" if cfg.save_checkpoints else "no",
        save_steps=cfg.save_steps,
        save_total_limit=2,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=_use_bf16(cfg),
        activation_checkpointing=cfg.gradient_checkpointing,  # the new name of gradient_checkpointing
        # examples over max_length were dropped in pre-flight, so nothing is left to truncate; TRL would
        # still run (and print) a "Truncating train dataset" pass, so it only gets max_length to pack to
        max_length=cfg.max_length if cfg.packing else None,
        packing=cfg.packing,
        packing_strategy=cfg.packing_strategy,
        completion_only_loss=True,
        report_to="none",
        # without use_cpu, accelerate on a CUDA-less machine under torchrun runs N unsynchronised copies
        use_cpu=not torch.cuda.is_available(),
        ddp_backend=None if torch.cuda.is_available() or not distributed else "gloo",
        deepspeed=cfg.deepspeed,
        disable_tqdm=not os.isatty(2),
        dataloader_drop_last=False,
    )
    model = _build_model(cfg, tok)
    if cfg.gradient_checkpointing:
        model.config.use_cache = False
    peft_config = None
    if cfg.lora_r > 0:
        from peft import LoraConfig

        targets = "all-linear" if cfg.lora_targets == ["all-linear"] else cfg.lora_targets
        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha or 2 * cfg.lora_r, lora_dropout=cfg.lora_dropout,
                                 target_modules=targets, task_type="CAUSAL_LM")
    if template:
        tok.chat_template = template  # the saved tokenizer carries the template it was trained with

    trace_dir = os.environ.get(TRACE_ENV)
    dataset = Dataset.from_list([{k: r[k] for k in ("input_ids", "completion_mask")} for r in rows])
    trainer = _make_trainer_class()(model=model, args=args, train_dataset=dataset, processing_class=tok, peft_config=peft_config)
    trainer.add_callback(_no_final_checkpoint_callback(cfg.stop_after_steps))
    if args.disable_tqdm:  # not a terminal: a log line per logging step instead of Trainer's dict on stdout
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(_log_line_callback())
    trainer.micota_tokens, trainer.micota_supervised, trainer.micota_seen = 0, 0, []
    if trace_dir:
        trainer.micota_ids = {tuple(r["input_ids"]): r["id"] for r in rows}
    main = trainer.is_world_process_zero()
    if main and partial.exists():
        shutil.rmtree(partial)
    with _one_line_write_failures(out, partial if main else None):
        result = trainer.train(resume_from_checkpoint=last if cfg.resume and last else None)

        rank = trainer.args.process_index
        if trace_dir:
            Path(trace_dir).mkdir(parents=True, exist_ok=True)
            checksum = float(sum(p.detach().double().sum() for p in trainer.model.parameters()))
            atomic_write_json(Path(trace_dir) / f"rank{rank}.json", {"rank": rank, "ids": trainer.micota_seen, "param_sum": checksum,
                                                                     "model_class": type(trainer.model_wrapped).__name__,
                                                                     "dist": str(trainer.accelerator.distributed_type)})
        totals = torch.tensor([trainer.micota_tokens, trainer.micota_supervised], dtype=torch.long, device=trainer.args.device)
        totals = trainer.accelerator.reduce(totals, reduction="sum").tolist()

        trainer.accelerator.unwrap_model(trainer.model).config.use_cache = True  # Trainer turned it off for training
        if peft_config is not None:
            if main:
                merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
                merged.save_pretrained(partial)
        else:
            trainer.save_model(str(partial))  # every rank calls it (DeepSpeed ZeRO-3 gathers shards); rank 0 writes
        trainer.accelerator.wait_for_everyone()
        if not main:
            return out

        (partial / "training_args.bin").unlink(missing_ok=True)  # pickle; the config is in manifest.json
        tok.save_pretrained(partial)
        curve = [{"step": h["step"], "loss": h["loss"]} for h in trainer.state.log_history if "loss" in h]
        report = {
            **counts,
            "tokens_seen": totals[0],
            "supervised_tokens_seen": totals[1],
            "steps": trainer.state.global_step,
            "epochs": trainer.state.epoch,
            "world_size": trainer.args.world_size,
            "resumed_from": last if cfg.resume else None,
            "tokens_counted_since_step": int(last.rsplit("-", 1)[-1]) if cfg.resume and last else 0,
            "train_loss": result.training_loss,
            "train_runtime_s": round(result.metrics.get("train_runtime", 0.0), 3),
            "loss_curve": curve,
            "wall_s": round(time.time() - t0, 3),
            "peak_rss_mb_rank0": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "lora": peft_config is not None,
            "packing": cfg.packing,
            "packing_strategy": cfg.packing_strategy if cfg.packing else None,
            "bf16": args.bf16,
        }
        atomic_write_json(partial / "train_report.json", report)
        _plot_loss(curve, partial / "loss.png", f"{Path(cfg.data).name} → {out.name}")
        base_input = cfg.base and resolve_model(cfg.base)
        write_manifest(partial, stage="train", config=cfg, inputs={"data": cfg.data, "base": base_input, "from_config": cfg.from_config},
                       counts={"examples": counts["examples_used"], "dropped_too_long": counts["dropped_too_long"],
                               "steps": report["steps"]}, started_at=t0)
        os.replace(partial, out)
    if not cfg.keep_checkpoints:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return out
