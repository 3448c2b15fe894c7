"""``python -m micota.pipeline.exec KIND CONFIG.json``: run one stage from a resolved config.

This is what the pipeline runner spawns under a launcher (``accelerate launch``/``torchrun``), so
every rank runs the same library function with the same config.
"""

from __future__ import annotations

import sys

from micota.errors import UserError
from micota.io import read_json


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m micota.pipeline.exec KIND CONFIG.json", file=sys.stderr)
        return 2
    from micota.pipeline.stages import get_stage_kind

    try:
        kind = get_stage_kind(argv[0])
        cls, fn = kind.load()
        fn(cls.build(read_json(argv[1]), prefix=argv[1]))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
