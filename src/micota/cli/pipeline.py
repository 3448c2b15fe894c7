"""CLI: ``micota run``, ``micota merge-search``, ``micota demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML file (see recipes/).")],
        out: Annotated[Optional[Path], typer.Option("--out", help="Output root (default: the file's 'out:').")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate, check every input file and optional extra, and print the plan on stdout "
                                                            "(what runs, what is cached, why); run nothing.")] = False,
        from_stage: Annotated[Optional[str], typer.Option("--from", help="Recompute this stage and everything downstream of it.")] = None,
        only: Annotated[Optional[str], typer.Option("--only", help="Run only this stage (its inputs must be complete).")] = None,
        executor: Annotated[str, typer.Option("--executor", help="local (default: a child process per model stage), "
                                              "inprocess (everything in this process) or slurm (one job per stage).")] = "local",
        status: Annotated[bool, typer.Option("--status", help="Show every stage's output status and its latest Slurm job "
                                             "(id, state, elapsed, log); run nothing.")] = False,
        cancel: Annotated[bool, typer.Option("--cancel", help="Cancel this pipeline's queued and running Slurm jobs.")] = False,
        var: Annotated[Optional[list[str]], typer.Option("--var", help="Override a variable the pipeline declares under vars: NAME=VALUE (repeatable).")] = None,
        allow_plugins: Annotated[bool, typer.Option("--allow-plugins", help="Let stage kinds be module:function import paths (runs code the pipeline names).")] = False,
        allow_launcher_args: Annotated[bool, typer.Option("--allow-launcher-args", help="Pass launcher args that are not the launcher's own options (they can run any command).")] = False,
    ) -> None:
        """Run a pipeline: every stage keyed by its config and inputs; cached stages are skipped, unfinished ones resume."""
        from micota.errors import UserError
        from micota.pipeline.runner import cancel_pipeline, pipeline_status, run_pipeline

        pairs = [v.partition("=") for v in var or []]
        if any(not sep or not k for k, sep, _ in pairs):
            raise UserError("--var takes NAME=VALUE")
        values = {k: v for k, _, v in pairs}
        if status or cancel:
            if status and cancel:
                raise UserError("--status and --cancel cannot be combined")
            typer.echo(pipeline_status(pipeline, out=out, vars=values) if status else cancel_pipeline(pipeline, out=out, vars=values))
            return
        # the plan is the result of a dry run: stdout; during a run it is progress: stderr
        echo = (lambda s: typer.echo(s)) if dry_run else (lambda s: typer.echo(s, err=True))
        plan = run_pipeline(pipeline, out=out, dry_run=dry_run, from_stage=from_stage, only=only, executor=executor,
                            allow_plugins=allow_plugins, allow_launcher_args=allow_launcher_args, echo=echo, vars=values)
        if not dry_run and (plan.out / "REPORT.md").is_file():
            typer.echo(f"report: {plan.out / 'REPORT.md'}")

    @app.command("demo")
    def demo(
        out: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("demo-out"),
        quick: Annotated[bool, typer.Option("--quick", help="The smaller world (about 3 minutes on 2 CPU cores).")] = False,
        seed: Annotated[int, typer.Option("--seed", help="Experiment seed: the world's problems and slips, the fine-tunes' data order and init, the merge seed.")] = 0,
    ) -> None:
        """Run the miniature MiCoTA pipeline end to end on CPU and print the results table."""
        from micota.demo import run_demo

        typer.echo(run_demo(out, quick=quick, seed=seed))

    try:
        from micota.pipeline.merge_search import MergeSearchConfig, merge_search, summary
    except ModuleNotFoundError as e:  # the merge engine is not installed in this tree
        if not (e.name or "").startswith("micota"):
            raise
        return
    from micota.cli._auto import config_command

    config_command(app, "merge-search", MergeSearchConfig, merge_search,
                   help="Accuracy × length Pareto search over merge methods, weights and densities on a dev split; "
                        "write the table, the Pareto plot and the chosen merged model.",
                   on_result=lambda r: typer.echo(summary(r)), flags={"probe": "problems"},
                   rerun_ignore=("batch_size", "device", "tensor_parallel_size"))
