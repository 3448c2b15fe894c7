"""TrainConfig: the flags of ``micota train``, the YAML keys and the Python API at once.

Defaults follow the learnability-gap recipe: full fine-tuning, lr 1e-5, 2 epochs, cosine schedule,
warmup ratio 0.1.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from micota.config import StageConfig


class TrainConfig(StageConfig):
    base: str | None = Field(None, description="Base model spec (HF folder, .gguf, hub id or alias); omit with --from-config")
    data: str = Field(..., description="SFT dataset: a directory holding data.jsonl or a .jsonl file of SftExample rows")
    out: str = Field(..., description="Output model folder (HF format, safetensors)")
    from_config: str | None = Field(None, description="config.json to train a model from random init (needs --tokenizer)")
    tokenizer: str | None = Field(None, description="Tokenizer model spec (default: the base model's)")
    lr: float = Field(1e-5, gt=0, description="Peak learning rate")
    epochs: float = Field(2.0, gt=0, description="Training epochs")
    batch_size: int = Field(4, ge=1, description="Per-device batch size (examples, or packed sequences with --packing)")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps")
    max_length: int = Field(4096, ge=2, description="Max tokens of prompt+completion; longer examples are dropped and counted, never truncated")
    packing: bool = Field(False, description="Pack examples into max_length sequences (see packing_strategy)")
    packing_strategy: Literal["bfd", "wrapped"] = Field(
        "bfd", description="With --packing: bfd = best-fit decreasing, packed examples do not attend to each other (TRL's "
        "padding-free rows: the batch is one row whose attention, without FlashAttention, is quadratic in batch x length); "
        "wrapped = concatenate and cut into max_length rows, examples attend to earlier ones in their row (LLM pretraining)")
    lora_r: int = Field(0, ge=0, description="LoRA rank; 0 = full fine-tuning. Adapters are merged into full weights on save")
    lora_alpha: int | None = Field(None, description="LoRA alpha (default 2 * lora_r)")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout")
    lora_targets: list[str] = Field(default_factory=lambda: ["all-linear"], description="LoRA target modules")
    bf16: Literal["auto", "true", "false"] = Field("auto", description="bf16 mixed precision (auto: on where the GPU supports it)")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Linear warmup, as a fraction of total steps")
    lr_scheduler: str = Field("cosine", description="LR schedule (transformers name: cosine, linear, constant, ...)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    seed: int = Field(0, description="Random seed (init, shuffling, dropout)")
    resume: bool = Field(False, description="Resume from the last checkpoint in OUT's checkpoint directory")
    template: str | None = Field(None, description="Jinja chat template file (for tokenizers without one)")
    use_chat_template: bool = Field(True, description="Render prompts with the chat template (off: plain text)")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides epochs)")
    stop_after_steps: int | None = Field(None, ge=1, description="End training after this many steps, schedule unchanged (to compare a rebuild with a recorded loss curve)")
    save_checkpoints: bool = Field(True, description="Save resumable checkpoints every --save-steps")
    save_steps: int = Field(200, ge=1, description="Optimizer steps between checkpoints")
    logging_steps: int = Field(10, ge=1, description="Optimizer steps between loss logs")
    keep_checkpoints: bool = Field(False, description="Keep OUT's checkpoint directory after success")
    deepspeed: str | None = Field(None, description="DeepSpeed JSON config (e.g. the shipped ZeRO-3 one); needs the deepspeed extra")

    def checkpoint_dir(self) -> str:
        """Stable sibling of OUT that survives a kill: ``.<name>.checkpoints``."""
        from pathlib import Path

        p = Path(self.out)
        return str(p.parent / f".{p.name}.checkpoints")
