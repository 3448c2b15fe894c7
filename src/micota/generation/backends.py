"""Generation backends behind one interface, and the ``hf`` (transformers) backend.

A backend turns rendered prompt strings into completions::

    backend.generate(prompts: list[str], params: SamplingParams) -> list[list[Completion]]

one list of ``params.n`` completions per prompt, in input order. Every backend exposes ``name``,
``model_id`` and ``tokenizer`` (used to render prompts and count tokens). Optional extras: a
backend whose results arrive one prompt at a time (a server) also has
``generate_stream(prompts, params)`` yielding ``(index, completions)`` as each prompt finishes, so
the runner writes results as they arrive; one that holds an engine has ``close()`` (called by
:func:`close_backend` when the stage that built it ends). Backends are registered by name in
:data:`BACKENDS` as lazy ``"module:attr"`` import paths (or factories), so optional ones (vLLM)
import nothing until used; :func:`make_backend` builds one.

Seeds and ``n`` are the same contract for every backend. Greedy (``temperature == 0``) decodes
each prompt once and repeats the completion ``n`` times. Sampled completion ``k`` of a prompt uses
its own seed :func:`sample_seed` ``= sha256(seed, k, prompt)[:32 bits]``, so it is the same
whatever the batch it lands in, the order of requests, the server that answers or the point a
run resumed from.

:class:`HFBackend` (``hf``): ``model.generate`` on batches of prompts, LEFT-padded and sorted by
length within the call (results are returned in input order), stopping on any EOS id (the
tokenizer's and the generation config's). Greedy when ``temperature == 0``; otherwise sampling
with ``temperature``/``top_p`` (``top_k`` off): each row draws from its own ``torch.Generator``
seeded with its :func:`sample_seed` through the Gumbel-max trick, ``argmax(log p_top-p / T + G)``
with ``G = -log(-log U)``, which is an exact draw from the top-p-truncated, temperature-scaled
softmax and does not depend on the other rows of the batch. ``finish_reason`` is ``"length"`` when ``max_new_tokens`` were generated
without EOS; ``completion_tokens`` counts generated tokens up to and including EOS (as vLLM does);
the text is decoded without special tokens.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Literal, Protocol, runtime_checkable

from micota.errors import UserError
from micota.io import sha256_text


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise UserError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise UserError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: Literal["stop", "length"]
    completion_tokens: int


@runtime_checkable
class GenerationBackend(Protocol):
    name: str
    model_id: str
    tokenizer: Any

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]: ...


BACKENDS: dict[str, str | Callable[..., GenerationBackend]] = {
    "hf": "micota.generation.backends:HFBackend",
    "openai": "micota.generation.openai_backend:OpenAIBackend",
    "vllm": "micota.generation.vllm_backend:VLLMBackend",
    "oracle": "micota.data.world.oracle:OracleBackend",
}


def register_backend(name: str, path_or_factory: str | Callable[..., GenerationBackend]) -> None:
    """Register a backend: a ``"module:attr"`` import path or a factory ``f(model, **kw)``."""
    BACKENDS[name] = path_or_factory


def _resolve(name: str) -> Callable[..., GenerationBackend]:
    if name not in BACKENDS:
        raise UserError(f"unknown backend {name!r} (known: {', '.join(sorted(BACKENDS))})")
    target = BACKENDS[name]
    if callable(target):
        return target
    mod_name, _, attr = target.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        raise UserError(f"backend {name!r} is not available ({e.name} is not installed)") from None
    return getattr(mod, attr)


def make_backend(name: str, model: str, *, dtype: str = "auto", device: str = "auto", allow_pickle: bool = False,
                 trust_remote_code: bool = False, **opts: Any) -> GenerationBackend:
    """Build backend ``name`` for ``model`` (a model spec, see :func:`micota.models.resolve_model`)."""
    factory = _resolve(name)
    return factory(model, dtype=dtype, device=device, allow_pickle=allow_pickle,
                   trust_remote_code=trust_remote_code, **opts)


def prompt_token_ids(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of a rendered prompt. Chat templates already write their special tokens, so none
    are added when the prompt starts with the BOS text; otherwise the tokenizer's defaults apply."""
    bos = getattr(tokenizer, "bos_token", None)
    add = not (bos and prompt.startswith(bos))
    return tokenizer(prompt, add_special_tokens=add)["input_ids"]


def sample_seed(seed: int, prompt: str, k: int) -> int:
    """The seed of sampled completion ``k`` of ``prompt`` under run seed ``seed`` (a 32-bit int)."""
    return int(sha256_text(f"{seed}\0{k}\0{prompt}")[:8], 16)


def close_backend(backend: Any) -> None:
    """Release what a backend holds (a vLLM engine, an HTTP connection pool), if it holds anything."""
    close = getattr(backend, "close", None)
    if callable(close):
        close()


class RowSampler:
    """A logits processor that makes greedy search sample: temperature, top-p, then Gumbel noise
    from each row's own generator (see the module docstring). Rows never share random numbers."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float):
        import torch
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        self.gens = [torch.Generator().manual_seed(s) for s in seeds]
        self.warpers = [TemperatureLogitsWarper(temperature)] + ([TopPLogitsWarper(top_p)] if top_p < 1 else [])

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        scores = scores.float()
        for w in self.warpers:
            scores = w(input_ids, scores)
        u = torch.stack([torch.rand(scores.shape[-1], generator=g, dtype=torch.float64) for g in self.gens])
        gumbel = -torch.log(-torch.log(u.clamp(1e-300, 1.0 - 1e-16)))
        return scores.log_softmax(-1) + gumbel.to(scores.device, scores.dtype)


class HFBackend:
    """transformers ``generate``; see the module docstring for the contract."""

    name = "hf"

    def __init__(self, model: str | None = None, *, dtype: str = "auto", device: str = "auto", allow_pickle: bool = False,
                 trust_remote_code: bool = False, batch_size: int = 8, model_obj: Any = None, tokenizer: Any = None):
        from micota.models import load_model, load_tokenizer

        if model_obj is None and model is None:
            raise UserError("HFBackend needs a model spec or a loaded model")
        self.model_id = str(model) if model is not None else str(getattr(model_obj, "name_or_path", "model"))
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(
            model if model is not None else model_obj.name_or_path, trust_remote_code=trust_remote_code,
            allow_pickle=allow_pickle)
        self.model = model_obj if model_obj is not None else load_model(
            model, dtype=dtype, device=device, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
        self.batch_size = max(1, int(batch_size))
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.eos_ids = self._eos_ids()

    def _eos_ids(self) -> list[int]:
        ids: list[int] = []
        for src in (self.tokenizer.eos_token_id, getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)):
            for i in src if isinstance(src, (list, tuple)) else [src]:
                if i is not None and i not in ids:
                    ids.append(int(i))
        if not ids:
            raise UserError(f"{self.model_id}: tokenizer and generation config define no EOS token")
        return ids

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        encoded = [prompt_token_ids(self.tokenizer, p) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
        out: list[list[Completion]] = [[] for _ in prompts]
        # sampling: each prompt is a row n times (row k seeded with sample_seed(seed, prompt, k));
        # greedy: once, copied n times. A batch holds batch_size rows.
        reps = params.n if params.temperature > 0 else 1
        rows = [(i, k) for i in order for k in range(reps)]
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            seeds = [sample_seed(params.seed, prompts[i], k) for i, k in chunk]
            for (i, _), comp in zip(chunk, self._generate_batch([encoded[i] for i, _ in chunk], seeds, params)):
                out[i].extend([comp] * (params.n // reps))
        return out

    def _generate_batch(self, ids: list[list[int]], seeds: list[int], params: SamplingParams) -> list[Completion]:
        import torch
        from transformers import GenerationConfig

        pad = self.tokenizer.pad_token_id
        width = max(len(x) for x in ids)
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], dtype=torch.long)
        from transformers import LogitsProcessorList

        # greedy search; when sampling, RowSampler turns its argmax into a per-row seeded draw
        kw: dict[str, Any] = dict(max_new_tokens=params.max_new_tokens, do_sample=False, eos_token_id=self.eos_ids,
                                  pad_token_id=pad, num_beams=1)
        procs = LogitsProcessorList([RowSampler(seeds, params.temperature, params.top_p)] if params.temperature > 0 else [])
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            gen = self.model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                      generation_config=GenerationConfig(**kw), logits_processor=procs,
                                      stopping_criteria=[_step_progress(width, params.max_new_tokens)])
        new = gen[:, width:].tolist()
        eos = set(self.eos_ids)
        result = []
        for toks in new:
            stop = next((j for j, t in enumerate(toks) if t in eos), None)
            body = toks if stop is None else toks[:stop]
            n_tok = len(toks) if stop is None else stop + 1
            reason = "stop" if stop is not None else "length"
            text = self.tokenizer.decode(body, skip_special_tokens=True)
            result.append(Completion(text=text, finish_reason=reason, completion_tokens=n_tok))
        return result



def _step_progress(prompt_width: int, max_new_tokens: int) -> Any:
    """A never-stopping stopping criterion that reports each decoding step to :mod:`micota.progress`."""
    import torch
    from transformers import StoppingCriteria

    from micota.progress import decode_step

    class StepProgress(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            decode_step(input_ids.shape[1] - prompt_width, max_new_tokens)
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    return StepProgress()
