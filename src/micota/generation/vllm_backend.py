"""The ``vllm`` backend: vLLM's offline ``LLM`` API in this process (optional extra
``pip install 'micota[vllm]'``). The server backend (``--backend openai`` against ``vllm serve``)
is the sturdier way to reach vLLM: its Python API and torch pin change with every release.

vLLM pins versions that conflict with TRL and mergekit, so it is imported only here and only when
this backend is built. Engine options: ``tensor_parallel_size``, ``gpu_memory_utilization``,
``max_model_len``, ``dtype``, ``trust_remote_code`` from the config's fields, and any other
``vllm.LLM`` argument through ``vllm_args`` (``engine_args`` here, e.g. ``enforce_eager``,
``enable_prefix_caching``, ``quantization``, ``swap_space``). ``device``: ``auto``/``cuda`` lets vLLM
choose; ``cuda:N`` or ``cuda:N,M`` sets ``CUDA_VISIBLE_DEVICES`` before the engine starts.

Sampling follows the contract of :mod:`micota.generation.backends`: greedy asks each prompt once
(``n = 1``) and repeats it ``n`` times; sampled completion ``k`` is its own request with
``SamplingParams(n=1, temperature, top_p, max_tokens=max_new_tokens, seed=sample_seed(seed, prompt, k))``.
vLLM's finish reason ``"length"`` stays ``"length"``, anything else (EOS, stop string) is ``"stop"``;
``completion_tokens = len(output.token_ids)``. :meth:`VLLMBackend.close` shuts the engine down
(workers, distributed state, cached GPU memory) when the stage that built it ends.
"""

from __future__ import annotations

import gc
import os
import re
from typing import Any

from micota.errors import UserError
from micota.generation.backends import Completion, SamplingParams, prompt_token_ids, sample_seed

# engine arguments that have their own config field (and trust_remote_code its own opt-in)
OWN_FIELDS = {"model", "tensor_parallel_size", "gpu_memory_utilization", "max_model_len", "dtype", "trust_remote_code"}


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise UserError("backend 'vllm' needs the optional extra: pip install 'micota[vllm]' (on a CUDA machine)") from None
    return vllm


def engine_kwargs(path: str, *, dtype: str, device: str, trust_remote_code: bool, tensor_parallel_size: int,
                  gpu_memory_utilization: float, max_model_len: int | None, engine_args: dict[str, Any]) -> dict[str, Any]:
    """The ``vllm.LLM`` keyword arguments for a config (and ``CUDA_VISIBLE_DEVICES`` for ``cuda:N``)."""
    clash = sorted(OWN_FIELDS & set(engine_args))
    if clash:
        raise UserError(f"vllm_args: {', '.join(clash)} has its own option; set it there, not in vllm_args")
    if device not in ("auto", "cuda"):
        m = re.fullmatch(r"cuda:(\d+(?:,\d+)*)", device)
        if not m:
            raise UserError(f"device {device!r}: the vllm backend takes auto, cuda, cuda:N or cuda:N,M")
        os.environ["CUDA_VISIBLE_DEVICES"] = m.group(1)
    kw: dict[str, Any] = dict(model=path, tensor_parallel_size=tensor_parallel_size, trust_remote_code=trust_remote_code,
                              gpu_memory_utilization=gpu_memory_utilization,
                              dtype={"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(dtype, dtype))
    if max_model_len:
        kw["max_model_len"] = max_model_len
    return {**kw, **engine_args}


class VLLMBackend:
    name = "vllm"

    def __init__(self, model: str, *, dtype: str = "auto", device: str = "auto", allow_pickle: bool = False,
                 trust_remote_code: bool = False, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                 max_model_len: int | None = None, engine_args: dict[str, Any] | None = None, **_: Any):
        vllm = _import_vllm()
        from micota.models import resolve_model

        self.model_id = str(model)
        path = resolve_model(model, allow_pickle=allow_pickle)
        self.llm = vllm.LLM(**engine_kwargs(str(path), dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                                            tensor_parallel_size=tensor_parallel_size,
                                            gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                                            engine_args=dict(engine_args or {})))
        self.tokenizer = self.llm.get_tokenizer()
        self._vllm = vllm

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        if self.llm is None:
            raise RuntimeError("VLLMBackend.generate after close()")
        reps = params.n if params.temperature > 0 else 1
        jobs = [(i, k) for i in range(len(prompts)) for k in range(reps)]
        sps = [self._vllm.SamplingParams(n=1, temperature=params.temperature, top_p=params.top_p,
                                         max_tokens=params.max_new_tokens,
                                         seed=sample_seed(params.seed, prompts[i], k) if params.temperature > 0 else None)
               for i, k in jobs]
        # token ids, tokenized as the hf backend does (no second BOS after a chat template's own)
        ids = [prompt_token_ids(self.tokenizer, p) for p in prompts]
        outs = self.llm.generate([{"prompt_token_ids": ids[i]} for i, _ in jobs], sps, use_tqdm=False)
        result: list[list[Completion]] = [[] for _ in prompts]
        for (i, _), req in zip(jobs, outs):
            o = req.outputs[0]
            result[i].append(Completion(text=o.text, finish_reason="length" if o.finish_reason == "length" else "stop",
                                        completion_tokens=len(o.token_ids)))
        return [r if reps == params.n else r * params.n for r in result]

    def close(self) -> None:
        """Shut the engine down and free its GPU memory, so the next stage can build another."""
        llm, self.llm = self.llm, None
        if llm is None:
            return
        engine = getattr(llm, "llm_engine", None)
        for obj in (engine, getattr(engine, "engine_core", None)):
            shutdown = getattr(obj, "shutdown", None)
            if callable(shutdown):
                shutdown()
        del llm, engine
        try:  # older vLLM keeps the parallel groups in module state
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

            destroy_model_parallel()
            destroy_distributed_environment()
        except ImportError:
            pass
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
