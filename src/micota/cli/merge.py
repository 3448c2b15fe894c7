"""``micota merge``: a thin CLI over :func:`micota.merging.merge`.

Two forms::

    micota merge CONFIG.yaml --out OUT      # a mergekit YAML (merge_method: ...) or MergeConfig keys
    micota merge --base DIR --finetuned DIR --method dare_ties --weight 0.5 --density 0.5 --seed 0 --out OUT

``OUT`` as a last positional argument (the old spelling) is still accepted, with a deprecation line.

In the two-model form ``--weight w`` is the fine-tune's share for every method: task-vector methods
add w·δ (δ = fine-tune − base); ``linear`` gives (1−w)·base + w·fine-tune; ``slerp`` uses t = w.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from micota.cli._auto import help_default, warn_deprecated
from micota.config import load_yaml
from micota.errors import UserError


def _build(paths: list[str], out: Optional[str], base: Optional[str], finetuned: Optional[str], method: Optional[str],
           params: dict[str, Any], options: dict[str, Any]) -> Any:
    from micota.merging import MergeConfig, from_mergekit_yaml

    options = {k: v for k, v in options.items() if v is not None}
    params = {k: v for k, v in params.items() if v is not None}
    two_model = bool(base or finetuned)
    if out is None and len(paths) == (1 if two_model else 2):  # old form: OUT as the last positional
        warn_deprecated("OUT as a positional argument", "--out OUT")
        out, paths = paths[-1], paths[:-1]
    if out is None:
        raise UserError("missing --out (the output model folder)")
    if two_model:
        if not (base and finetuned):
            raise UserError("--base and --finetuned go together")
        if paths:
            raise UserError(f"with --base/--finetuned give no CONFIG.yaml (got {paths[0]!r})")
        weight, density = params.pop("weight", None), params.pop("density", None)
        return MergeConfig.two_model(base, finetuned, method=method or "dare_ties", weight=weight, density=density,
                                     out=out, parameters=params, **options)
    if len(paths) != 1:
        raise UserError("usage: micota merge CONFIG.yaml --out OUT  (or --base DIR --finetuned DIR --out OUT)")
    if params:
        raise UserError(f"--{next(iter(params))} applies to --base/--finetuned merges; put it in {paths[0]}")
    data = load_yaml(paths[0])
    if method:
        options["method"] = method
    if "merge_method" in data:
        return from_mergekit_yaml(paths[0], out=out, **options)
    return MergeConfig.build({**data, **options, "out": out}, prefix=paths[0])


def _d(field: str) -> str:
    from micota.merging import MergeConfig

    return help_default(MergeConfig.model_fields[field].get_default(call_default_factory=True))


def register(app: typer.Typer) -> None:
    @app.command("merge")
    def merge_cmd(
        paths: list[str] = typer.Argument(None, help="CONFIG.yaml (a mergekit YAML or MergeConfig keys); "
                                          "none with --base/--finetuned.", show_default=False),
        out: Optional[str] = typer.Option(None, "--out", help="Output model folder (required)."),
        base: Optional[str] = typer.Option(None, help="Base model folder (two-model form)."),
        finetuned: Optional[str] = typer.Option(None, help="Fine-tuned model folder (two-model form)."),
        method: Optional[str] = typer.Option(None, help="Merge method: linear, task_arithmetic, ties, dare_ties, dare_linear, "
                                             "breadcrumbs, breadcrumbs_ties, della, della_linear, slerp." + _d("method")),
        weight: Optional[float] = typer.Option(None, help="The fine-tune's share (two-model form): task-vector methods add w·(fine-tune − base); linear = (1−w)·base + w·fine-tune; slerp t = w."),
        density: Optional[float] = typer.Option(None, help="Fraction of the task vector kept, in (0, 1] (dare/ties/della)."),
        gamma: Optional[float] = typer.Option(None, help="breadcrumbs: fraction of largest outliers dropped."),
        epsilon: Optional[float] = typer.Option(None, help="della: keep-probability spread."),
        seed: Optional[int] = typer.Option(None, help="Seed for random masks (dare_*, della*)." + _d("seed")),
        dtype: Optional[str] = typer.Option(None, help="Compute dtype: float32|bfloat16|float16|float64 "
                                            "(default: the inputs' promoted dtype)."),
        out_dtype: Optional[str] = typer.Option(None, help="Output dtype (default: the compute dtype)."),
        threads: Optional[int] = typer.Option(None, help="Tensors merged in parallel (0 = number of CPUs, at most 4)." + _d("threads")),
        shard_size: Optional[str] = typer.Option(None, help="Max output shard size." + _d("shard_size")),
        max_bytes_in_flight: Optional[str] = typer.Option(None, help="Memory bound for tensors in flight." + _d("max_bytes_in_flight")),
        mergekit_compatible: Optional[bool] = typer.Option(None, "--mergekit-compatible/--no-mergekit-compatible",
                                                           help="Byte-identical to mergekit-yaml --random-seed N -j 1." + _d("mergekit_compatible")),
        embed_policy: Optional[str] = typer.Option(None, help="Vocabulary mismatch: error|truncate|pad." + _d("embed_policy")),
        allow_pickle: Optional[bool] = typer.Option(None, "--allow-pickle/--no-allow-pickle", help="Allow pickle .bin checkpoints." + _d("allow_pickle")),
        overwrite: Optional[bool] = typer.Option(None, "--overwrite/--no-overwrite", help="Replace a finished OUT made with another config (or recompute it)." + _d("overwrite")),
    ) -> None:
        """Merge models (DARE-TIES and friends) into a new HF folder, streaming tensor by tensor."""
        from micota.merging import merge
        from micota.rerun import check_rerun

        cfg = _build(paths or [], out, base, finetuned, method,
                     {"weight": weight, "density": density, "gamma": gamma, "epsilon": epsilon},
                     {"seed": seed, "dtype": dtype, "out_dtype": out_dtype, "threads": threads, "shard_size": shard_size,
                      "max_bytes_in_flight": max_bytes_in_flight, "mergekit_compatible": mergekit_compatible,
                      "embed_policy": embed_policy, "allow_pickle": allow_pickle, "overwrite": overwrite})
        if not check_rerun(cfg.out, cfg, stage="merge", overwrite=cfg.overwrite, ignore=("threads", "max_bytes_in_flight")):
            from micota.io import call_locked

            call_locked(merge, cfg)  # one writer per output
        typer.echo(str(Path(cfg.out)))
