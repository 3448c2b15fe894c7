"""What a stage asks of a cluster: the ``resources:`` of a stage and the pipeline's ``slurm:`` block.

::

    slurm:                                   # read only by ``micota run --executor slurm``
      partition: gpu
      account: myproj
      defaults:                              # per stage kind (over the built-in 1 node, 1 CPU, no GPU)
        generate: {gpus_per_node: 1, cpus_per_task: 8, time: "4:00:00"}
        train:    {gpus_per_node: 8, cpus_per_task: 64, mem: 0, time: "1-00:00:00"}
    stages:
      teacher_gen: {kind: generate, ..., resources: {gpus_per_node: 4, time: "10:00:00", array: 8}}

A stage's effective resources, later wins: built-in (1 node, no GPU, as many CPUs as the pipeline's
``threads:`` pins, else 1) -> ``slurm.defaults[kind]`` -> ``slurm``'s partition/account/qos/extra ->
the stage's ``resources:``. (A job running ``threads`` torch threads on fewer cores shares them with
the jobs Slurm packs beside it, and the threads wait on each other at every op: docs/design/slurm.md
has the 20-30x it cost the quick recipe.) ``extra`` holds further ``sbatch``
options (``--constraint=a100``); options the executor sets itself (output, dependency, array, ...)
or that would run code or write elsewhere are refused.

``array: N`` (a stage whose kind can be split: ``generate``) runs the stage as a Slurm job array of N
tasks, each asking for the resources above and computing a disjoint share of the problems
(:mod:`micota.generation.split`), plus one small finish job (1 CPU, no GPU, after all tasks) that
checks every task and writes the stage's manifest. Only ``--executor slurm`` reads it; the output is
the same as unsplit.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")
_MEM = re.compile(r"^\d+[KMGT]?$")
_OPT = re.compile(r"^--[a-z][a-z0-9-]*(=\S+)?$")
# set by the executor, or able to run code / write outside the output directory
RESERVED_SBATCH = frozenset({
    "output", "error", "input", "chdir", "wrap", "export", "export-file", "parsable", "dependency", "job-name",
    "array", "open-mode", "signal", "requeue", "no-requeue", "kill-on-invalid-dep", "nodes", "gpus-per-node",
    "cpus-per-task", "mem", "time", "partition", "account", "qos", "ntasks-per-node", "wait", "test-only",
    "uid", "gid", "get-user-env",
})


def check_extra(v: list[str] | None) -> list[str] | None:
    for opt in v or []:
        if not _OPT.match(opt):
            raise ValueError(f"{opt!r}: write sbatch options as --name or --name=value")
        name = opt[2:].split("=", 1)[0]
        if name in RESERVED_SBATCH:
            raise ValueError(f"{opt!r}: --{name} is set by the executor or from the resources fields")
    return v


class Resources(BaseModel):
    """One stage's request (every field optional: unset fields come from the layer below)."""

    model_config = ConfigDict(extra="forbid")
    nodes: int | None = Field(None, ge=1, description="nodes (>1: srun starts one launcher per node)")
    gpus_per_node: int | None = Field(None, ge=0, description="GPUs per node (0: none requested)")
    cpus_per_task: int | None = Field(None, ge=1, description="CPU cores for the stage (per node)")
    mem: str | int | None = Field(None, description="memory per node, sbatch syntax: 64G, 500000M, 0 = all")
    time: str | None = Field(None, description="time limit, sbatch syntax: MINUTES, HH:MM:SS, D-HH:MM:SS")
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    extra: list[str] | None = Field(None, description="further sbatch options, e.g. --constraint=h100")
    array: int | None = Field(None, ge=1, description="split the stage into N Slurm array tasks of disjoint problems "
                              "(generate), each with these resources")

    @field_validator("time")
    @classmethod
    def _time(cls, v: str | None) -> str | None:
        if v is not None and not _TIME.match(str(v)):
            raise ValueError(f"{v!r} is not a Slurm time (MINUTES, HH:MM:SS or D-HH:MM:SS)")
        return v

    @field_validator("mem")
    @classmethod
    def _mem(cls, v: str | int | None) -> str | None:
        if v is None:
            return None
        if not _MEM.match(str(v)):
            raise ValueError(f"{v!r} is not a Slurm memory size (e.g. 64G, 500000M, 0)")
        return str(v)

    _extra = field_validator("extra")(classmethod(lambda cls, v: check_extra(v)))


BUILTIN = Resources(nodes=1, gpus_per_node=0, cpus_per_task=1)


class SlurmSettings(BaseModel):
    """The pipeline's top-level ``slurm:`` block."""

    model_config = ConfigDict(extra="forbid")
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    extra: list[str] = Field(default_factory=list, description="sbatch options for every job")
    defaults: dict[str, Resources] = Field(default_factory=dict, description="resources per stage kind")
    requeue: bool = Field(True, description="requeue a job killed by its time limit or by preemption")
    requeue_before_s: int = Field(300, ge=10, description="seconds before the time limit at which a job requeues itself")
    poll_s: float = Field(15.0, gt=0, description="how often `micota run` polls the queue while it waits")

    _extra = field_validator("extra")(classmethod(lambda cls, v: check_extra(v)))

    def resolve(self, kind: str, stage: Resources | None, threads: int | None = None) -> Resources:
        """Effective resources of a stage of ``kind`` (see the module docstring for the order);
        ``threads``: the pipeline's pinned torch threads, the built-in CPU count."""
        merged = BUILTIN.model_copy(update={"cpus_per_task": threads or BUILTIN.cpus_per_task}).model_dump()
        layers = [self.defaults.get(kind), Resources(partition=self.partition, account=self.account, qos=self.qos,
                                                      extra=self.extra or None), stage]
        for layer in layers:
            if layer is None:
                continue
            for k, v in layer.model_dump(exclude_none=True).items():
                merged[k] = merged[k] + v if k == "extra" and merged.get(k) else v
        return Resources.model_validate(merged)
