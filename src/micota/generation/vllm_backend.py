"""The ``vllm`` backend: vLLM's offline ``LLM`` API (optional extra ``pip install 'micota[vllm]'``).

vLLM pins versions that conflict with TRL and mergekit, so it is imported only here and only when
this backend is built. Sampling maps one to one: ``SamplingParams(n, temperature, top_p,
max_tokens=max_new_tokens, seed)``; vLLM's finish reason ``"length"`` stays ``"length"``, anything
else (EOS, stop string) is ``"stop"``; ``completion_tokens`` = ``len(output.token_ids)``.
"""

from __future__ import annotations

from typing import Any

from micota.errors import UserError
from micota.generation.backends import Completion, SamplingParams, prompt_token_ids


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise UserError("backend 'vllm' needs the optional extra: pip install 'micota[vllm]' (on a CUDA machine)") from None
    return vllm


class VLLMBackend:
    name = "vllm"

    def __init__(self, model: str, *, dtype: str = "auto", device: str = "auto", allow_pickle: bool = False,
                 trust_remote_code: bool = False, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                 max_model_len: int | None = None, batch_size: int | None = None, **_: Any):
        vllm = _import_vllm()
        from micota.models import resolve_model

        self.model_id = str(model)
        path = resolve_model(model, allow_pickle=allow_pickle)
        kw: dict[str, Any] = dict(model=path, tensor_parallel_size=tensor_parallel_size, trust_remote_code=trust_remote_code,
                                  gpu_memory_utilization=gpu_memory_utilization,
                                  dtype={"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(dtype, dtype))
        if max_model_len:
            kw["max_model_len"] = max_model_len
        self.llm = vllm.LLM(**kw)
        self.tokenizer = self.llm.get_tokenizer()
        self._vllm = vllm

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        sp = self._vllm.SamplingParams(n=params.n, temperature=params.temperature, top_p=params.top_p,
                                       max_tokens=params.max_new_tokens, seed=params.seed)
        # token ids, tokenized as the hf backend does (no second BOS after a chat template's own)
        outs = self.llm.generate([{"prompt_token_ids": prompt_token_ids(self.tokenizer, p)} for p in prompts], sp, use_tqdm=False)
        return [
            [Completion(text=o.text, finish_reason="length" if o.finish_reason == "length" else "stop",
                        completion_tokens=len(o.token_ids)) for o in req.outputs]
            for req in outs
        ]
