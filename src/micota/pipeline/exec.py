"""``python -m micota.pipeline.exec KIND CONFIG.json``: run one stage from a resolved config.

This is what the pipeline runner spawns under a launcher (``accelerate launch``/``torchrun``), so
every rank runs the same library function with the same config.
"""

from __future__ import annotations

import sys

from micota.errors import EmptyInputError, UserError, os_error_line
from micota.io import call_locked, read_json
from micota.manifest import write_empty_manifest


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m micota.pipeline.exec KIND CONFIG.json", file=sys.stderr)
        return 2
    from micota.pipeline.stages import get_stage_kind

    try:
        kind = get_stage_kind(argv[0])
        cls, fn = kind.load()
        cfg = cls.build(read_json(argv[1]), prefix=argv[1])
        try:
            call_locked(fn, cfg)
        except EmptyInputError as e:  # recorded, not fatal: the runner marks dependants empty
            if _is_rank0():
                write_empty_manifest(getattr(cfg, kind.out_field()), stage=kind.name, config=cfg, reason=str(e))
            print(f"empty: {e}", file=sys.stderr)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # read-only or full disk, a file where a directory belongs
        print(f"error: {os_error_line(e)}", file=sys.stderr)
        return 2
    return 0


def _is_rank0() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
