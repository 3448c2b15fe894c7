"""Model merging: a streaming, mergekit-0.1.5-compatible merge engine.

- :func:`merge` (``micota merge``): typed :class:`MergeConfig` in, HF model folder out.
- :meth:`MergeConfig.two_model`: the MiCoTA case (fine-tune + its base, DARE-TIES by default).
- :func:`from_mergekit_yaml`: read a mergekit YAML file.
- :data:`METHODS`: the method registry (:mod:`micota.merging.methods`).
"""

from micota.merging.config import InputModel, MergeConfig, from_mergekit_yaml
from micota.merging.engine import merge
from micota.merging.methods import METHODS, register

__all__ = ["InputModel", "MergeConfig", "METHODS", "from_mergekit_yaml", "merge", "register"]
