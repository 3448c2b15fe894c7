"""The miniature world: a place where the whole MiCoTA method runs on 2 CPU cores in minutes.

- :mod:`.problems` — seeded arithmetic word problems (train / test / hard splits) with exact answers.
- :mod:`.traces` — the oracle teacher's trace styles: short, mid, long (reflective, with corrected slips).
- :mod:`.oracle` — :class:`OracleBackend`, the oracle as a generation backend (``oracle:<style>:<world>``).
- :mod:`.build` — :class:`WorldConfig` / :func:`build_world`: problems, traces, tokenizer, model configs.
- :mod:`.pretrain` — :class:`PretrainConfig` / :func:`pretrain_bases`: the System-1 bases.
"""

from micota.data.world.build import QUICK, World, WorldConfig, build_world, load_world, load_world_tokenizer
from micota.data.world.pretrain import PretrainConfig, measure_accuracy, pretrain_bases

__all__ = ["QUICK", "PretrainConfig", "World", "WorldConfig", "build_world", "load_world", "load_world_tokenizer",
           "measure_accuracy", "pretrain_bases"]
