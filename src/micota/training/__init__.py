"""Training: SFT through TRL (:mod:`.sft`), dataset reading + tokenization (:mod:`.data`), the
typed config (:mod:`.config`) and launch configs for accelerate/DeepSpeed (``launch/``).

``from micota.training import TrainConfig, train`` — heavy imports (torch, TRL) happen on call.
"""

from micota.training.config import TrainConfig


def train(cfg: TrainConfig):  # noqa: ANN201 - thin lazy wrapper
    """Fine-tune a model on an SFT dataset; see :func:`micota.training.sft.train`."""
    from micota.training.sft import train as _train

    return _train(cfg)


__all__ = ["TrainConfig", "train"]
