"""``micota merge``: a thin CLI over :func:`micota.merging.merge`.

Two forms::

    micota merge CONFIG.yaml OUT            # a mergekit YAML (merge_method: ...) or MergeConfig keys
    micota merge --base DIR --finetuned DIR --method dare_ties --weight 0.5 --density 0.5 --seed 0 OUT
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from micota.config import load_yaml
from micota.errors import UserError


def _run(paths: list[str], base: Optional[str], finetuned: Optional[str], method: Optional[str],
         params: dict[str, Any], options: dict[str, Any]) -> Path:
    from micota.merging import MergeConfig, from_mergekit_yaml, merge

    options = {k: v for k, v in options.items() if v is not None}
    params = {k: v for k, v in params.items() if v is not None}
    if base or finetuned:
        if not (base and finetuned):
            raise UserError("--base and --finetuned go together")
        if len(paths) != 1:
            raise UserError("with --base/--finetuned give exactly one positional argument: OUT")
        cfg = MergeConfig.build({"method": method or "dare_ties", "base": base, "out": paths[0],
                                 "models": [{"model": finetuned, "parameters": params}], **options})
    else:
        if len(paths) != 2:
            raise UserError("usage: micota merge CONFIG.yaml OUT  (or --base DIR --finetuned DIR OUT)")
        if params:
            raise UserError(f"--{next(iter(params))} applies to --base/--finetuned merges; put it in {paths[0]}")
        data = load_yaml(paths[0])
        if method:
            options["method"] = method
        if "merge_method" in data:
            cfg = from_mergekit_yaml(paths[0], out=paths[1], **options)
        else:
            cfg = MergeConfig.build({**data, **options, "out": paths[1]}, prefix=paths[0])
    from micota.io import call_locked

    return call_locked(merge, cfg)  # one writer per output


def register(app: typer.Typer) -> None:
    @app.command("merge")
    def merge_cmd(
        paths: list[str] = typer.Argument(..., help="CONFIG.yaml OUT, or just OUT with --base/--finetuned.", show_default=False),
        base: Optional[str] = typer.Option(None, help="Base model folder (two-model form)."),
        finetuned: Optional[str] = typer.Option(None, help="Fine-tuned model folder (two-model form)."),
        method: Optional[str] = typer.Option(None, help="Merge method [default: dare_ties]: linear, task_arithmetic, ties, dare_ties, dare_linear, breadcrumbs, breadcrumbs_ties, della, della_linear, slerp."),
        weight: Optional[float] = typer.Option(None, help="Weight of the fine-tune's task vector."),
        density: Optional[float] = typer.Option(None, help="Fraction of the task vector kept, in (0, 1]."),
        gamma: Optional[float] = typer.Option(None, help="breadcrumbs: fraction of largest outliers dropped."),
        epsilon: Optional[float] = typer.Option(None, help="della: keep-probability spread."),
        seed: Optional[int] = typer.Option(None, help="Seed for random masks [default: 0]."),
        dtype: Optional[str] = typer.Option(None, help="Compute dtype: float32|bfloat16|float16|float64."),
        out_dtype: Optional[str] = typer.Option(None, help="Output dtype."),
        threads: Optional[int] = typer.Option(None, help="Tensors merged in parallel (0 = auto)."),
        shard_size: Optional[str] = typer.Option(None, help="Max output shard size [default: 5GB]."),
        max_bytes_in_flight: Optional[str] = typer.Option(None, help="Memory bound for tensors in flight [default: 512MB]."),
        mergekit_compatible: Optional[bool] = typer.Option(None, "--mergekit-compatible/--no-mergekit-compatible", help="Byte-identical to mergekit-yaml --random-seed N -j 1."),
        embed_policy: Optional[str] = typer.Option(None, help="Vocabulary mismatch: error|truncate|pad."),
        allow_pickle: Optional[bool] = typer.Option(None, "--allow-pickle/--no-allow-pickle", help="Allow pickle .bin checkpoints."),
        overwrite: Optional[bool] = typer.Option(None, "--overwrite/--no-overwrite", help="Replace an existing OUT."),
    ) -> None:
        """Merge models (DARE-TIES and friends) into a new HF folder, streaming tensor by tensor."""
        out = _run(paths, base, finetuned, method,
                   {"weight": weight, "density": density, "gamma": gamma, "epsilon": epsilon},
                   {"seed": seed, "dtype": dtype, "out_dtype": out_dtype, "threads": threads, "shard_size": shard_size,
                    "max_bytes_in_flight": max_bytes_in_flight, "mergekit_compatible": mergekit_compatible,
                    "embed_policy": embed_policy, "allow_pickle": allow_pickle, "overwrite": overwrite})
        typer.echo(str(out))
