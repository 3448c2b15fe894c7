"""Model merging: a streaming, mergekit-0.1.5-compatible merge engine.

- :func:`merge` (``micota merge``): typed :class:`MergeConfig` in, HF model folder out
  (:mod:`micota.merging.stage`: the torch-free fast path for one fine-tune onto its base, else the
  torch engine).
- :meth:`MergeConfig.two_model`: the MiCoTA case (fine-tune + its base, DARE-TIES by default).
- :func:`from_mergekit_yaml`: read a mergekit YAML file.
- :data:`METHODS`: the method registry (:mod:`micota.merging.methods`; importing it imports torch).
"""

from typing import Any

from micota.merging.config import InputModel, MergeConfig, from_mergekit_yaml
from micota.merging.stage import merge

__all__ = ["InputModel", "MergeConfig", "METHODS", "from_mergekit_yaml", "merge", "register"]


def __getattr__(name: str) -> Any:  # METHODS / register load torch: only when asked for
    if name in ("METHODS", "register"):
        from micota.merging import methods

        return getattr(methods, name)
    raise AttributeError(name)
