"""``micota demo``: the miniature MiCoTA recipe through the pipeline runner, then its results table.

``recipes/miniature.yaml`` (default, ≤ 15 min on 2 CPU cores) or ``recipes/miniature-quick.yaml``
(``--quick``, ≤ 3 min; CI runs it). Rerunning with the same ``--out`` reuses finished stages.
"""

from __future__ import annotations

import os
from pathlib import Path

from micota.errors import UserError
from micota.io import read_json

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def recipe_path(quick: bool = False) -> Path:
    p = RECIPES / ("miniature-quick.yaml" if quick else "miniature.yaml")
    if not p.is_file():
        raise UserError(f"{p}: demo recipe not found (run from a source checkout: pip install -e .)")
    return p


def run_demo(out: str | os.PathLike, *, quick: bool = False) -> str:
    """Run the demo pipeline into ``out``; returns the results table (variants + claim verdicts)."""
    from micota.pipeline.runner import run_pipeline
    from micota.report.render import results_table

    # in-process: on CPU a child per model stage only adds start-up time (BENCHMARKS.md, executors)
    plan = run_pipeline(recipe_path(quick), out=out, executor="inprocess")
    res = plan.out / "results.json"
    if not res.is_file():
        raise UserError(f"{plan.out}: the pipeline finished without results.json (no report stage?)")
    return results_table(read_json(res)) + f"\n\nfull report: {plan.out / 'REPORT.md'}"
