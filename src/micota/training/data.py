"""SFT datasets: read and validate :class:`~micota.records.SftExample` rows, and tokenize them the
one way train and bpc both use.

A DATASET argument is a directory holding ``data.jsonl`` or a ``.jsonl`` file. Every row must be a
valid SftExample with a non-empty prompt and exactly one non-empty assistant message as completion;
ids must be unique. Anything else is a :class:`UserError` naming the file (and line or id).

Tokenization (:func:`encode_pair`): the prompt string (rendered by
:func:`micota.generation.prompts.render_prompt`) and prompt+completion are tokenized; the completion
starts at the first token whose character offset is at or after ``len(prompt)``. If the joint
tokenization merged a token across that boundary (its prompt part is then not the prompt's own
tokenization), the pair is re-encoded as ``prompt_ids + completion_ids`` — exactly what the model
sees at inference — so no completion character is scored twice or skipped, and the prompt tokens
are always those of generation time. ``merged`` reports that this happened.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from micota.errors import EmptyInputError, UserError
from micota.records import SftExample, iter_jsonl


def dataset_file(path: str | os.PathLike) -> Path:
    """DATASET argument -> the JSONL file: ``DIR/data.jsonl`` or the file itself."""
    p = Path(path)
    if p.is_dir():
        f = p / "data.jsonl"
        if not f.is_file():
            raise UserError(f"{p}: dataset directory has no data.jsonl")
        return f
    if not p.exists():
        raise UserError(f"{p}: no such dataset (expected a directory with data.jsonl or a .jsonl file)")
    return p


def completion_text(ex: SftExample) -> str:
    return ex.completion[0].content


def read_sft_dataset(path: str | os.PathLike) -> list[SftExample]:
    """Validated SftExample rows of a dataset (see module docstring for the rules)."""
    f = dataset_file(path)
    rows: list[SftExample] = []
    seen: set[str] = set()
    for ex in iter_jsonl(f, SftExample):
        if not ex.prompt:
            raise UserError(f"{f}: example {ex.id!r} has an empty prompt")
        if len(ex.completion) != 1 or ex.completion[0].role != "assistant":
            raise UserError(f"{f}: example {ex.id!r}: completion must be exactly one assistant message")
        if not ex.completion[0].content.strip():
            raise UserError(f"{f}: example {ex.id!r} has an empty completion")
        if ex.id in seen:
            raise UserError(f"{f}: duplicate example id {ex.id!r}")
        seen.add(ex.id)
        rows.append(ex)
    if not rows:
        raise EmptyInputError(f"{f}: dataset has no examples")
    return rows


def read_template(path: str | None) -> str | None:
    """Contents of a ``--template`` jinja file (None passes through)."""
    if path is None:
        return None
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{p}: template file not found") from None
    except UnicodeDecodeError:
        raise UserError(f"{p}: template is not valid UTF-8") from None


def check_template(tokenizer: Any, *, use_chat_template: bool, template: str | None) -> None:
    """Fail early when a chat template is needed but neither the tokenizer nor --template has one."""
    if use_chat_template and not (template or getattr(tokenizer, "chat_template", None)):
        raise UserError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template: pass --template FILE.jinja or --no-use-chat-template"
        )


@dataclass
class Encoded:
    ids: list[int]  # prompt + completion
    n_prompt: int  # the first n_prompt ids are the prompt
    merged: bool  # joint tokenization merged across the boundary; re-encoded separately

    @property
    def n_completion(self) -> int:
        return len(self.ids) - self.n_prompt


def _ids(tokenizer: Any, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def encode_pair(tokenizer: Any, prompt: str, completion: str) -> Encoded:
    """Tokenize ``prompt + completion`` jointly; locate the completion start via character offsets.

    Special tokens follow generation (:func:`micota.generation.backends.prompt_token_ids`): none
    are added when the prompt already starts with the BOS text (chat templates write their own),
    otherwise the tokenizer's defaults apply (e.g. BOS in front of a plain-text prompt).
    """
    bos = getattr(tokenizer, "bos_token", None)
    special = not (bos and prompt.startswith(bos))
    p_ids = _ids(tokenizer, prompt, special)
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(prompt + completion, add_special_tokens=special, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
        k = next((i for i, (s, e) in enumerate(offsets) if s >= len(prompt) and e > s), len(ids))
    else:
        ids = _ids(tokenizer, prompt + completion, special)
        k = len(p_ids)
    if ids[:k] == p_ids and k < len(ids):
        return Encoded(ids, k, False)
    c_ids = _ids(tokenizer, completion, False)
    return Encoded(p_ids + c_ids, len(p_ids), True)
