"""``micota run --executor slurm``: every stage instance a Slurm job, dependencies as ``afterok``.

For each stage to compute (planned as usual: cached stages are never submitted, incomplete ones
resume) the executor writes a batch script ``OUT/.pipeline/slurm/<instance>.sbatch`` and submits it
with ``sbatch --parsable``: resources from the stage's ``resources:`` over the pipeline's ``slurm:``
block (:mod:`micota.pipeline.resources`), ``--dependency=afterok:<jobs of the stages it reads>``
and ``--kill-on-invalid-dep=yes``, so independent stages (the ``foreach`` variants) queue and run
side by side. The job runs ``python -m micota.pipeline.exec KIND CONFIG.json`` with this Python and
this working directory; a multi-node stage (``nodes > 1``) runs ``srun`` with one ``torchrun`` /
``accelerate launch`` per node, the rendezvous address being the allocation's first node. Logs:
``OUT/.pipeline/logs/<instance>-<jobid>.log``. Submissions are appended to
``OUT/.pipeline/slurm/jobs.jsonl``; a rerun reuses a job still queued or running for the same
stage key instead of submitting it twice.

A generate stage with ``resources: {array: N}`` becomes a job array of its unfinished tasks
(``--array=K,...``, each running ``exec ... --task $SLURM_ARRAY_TASK_ID`` with the stage's resources:
:mod:`micota.generation.split`) and a 1-CPU finish job (``exec ... --finish``, ``afterok`` on the
array) that writes the stage's manifest; dependants wait on the finish job. A rerun resubmits only the
tasks that are neither complete nor still queued or running. Task logs:
``OUT/.pipeline/logs/<instance>-<array>_<task>.log``; ``--status`` shows one row per task.

Time limits and preemption: jobs are ``--requeue``-able and get ``SIGUSR1`` ``requeue_before_s``
before their limit, on which the script runs ``scontrol requeue``; the requeued job starts over
and the stage resumes from what it wrote.

``micota run`` waits for its jobs (polling ``squeue``; ``sacct`` for jobs ``squeue`` has forgotten),
printing state changes; a failed job cancels its dependants and ends the run with one line naming
the stage, the job and its log. ``--status`` and ``--cancel`` read the job records. We call the
Slurm commands through this small typed wrapper rather than submitit: see docs/design/slurm.md.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from micota.errors import UserError
from micota.manifest import is_complete
from micota.pipeline.executors import LOG_DIR, Done, Echo, inputs_args, launcher_command, write_config
from micota.pipeline.planner import Instance, Plan
from micota.pipeline.resources import Resources
from micota.pipeline.schema import LauncherSpec

JOBS_DIR = ".pipeline/slurm"
LIVE = frozenset({"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
                  "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "STOPPED", "PREEMPTED"})
RDZV_PORT = 29500


# ----------------------------------------------------------------------------- the typed wrapper
@dataclass
class JobState:
    job_id: str
    state: str  # PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, ... or UNKNOWN
    elapsed: str = ""
    reason: str = ""

    @property
    def live(self) -> bool:
        return self.state in LIVE


class Slurm:
    """``sbatch``/``squeue``/``sacct``/``scancel`` as typed calls; errors become one-line UserErrors."""

    def __init__(self, env: dict[str, str] | None = None):
        self.env = env

    def _call(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
        if shutil.which(argv[0]) is None:
            raise UserError(f"--executor slurm: {argv[0]} not found on PATH (run on a Slurm login node)")
        r = subprocess.run(argv, capture_output=True, text=True, env=self.env)
        if check and r.returncode != 0:
            msg = (r.stderr.strip() or r.stdout.strip()).splitlines()
            raise UserError(f"{argv[0]} failed (exit {r.returncode}): {msg[-1] if msg else ''}")
        return r

    def submit(self, script: Path, args: list[str] = ()) -> str:
        out = self._call(["sbatch", "--parsable", *args, str(script)]).stdout.strip()
        return out.split(";")[0]  # "<id>" or "<id>;<cluster>"

    def states(self, ids: list[str]) -> dict[str, JobState]:
        """Current state of each job id (``UNKNOWN`` when neither squeue nor sacct knows it)."""
        got: dict[str, JobState] = {}
        if not ids:
            return got
        r = self._call(["squeue", "-h", "-r", "--states=all", "-j", ",".join(ids), "-o", "%i|%T|%M|%r"], check=False)
        if r.returncode == 0:
            for line in r.stdout.splitlines():
                parts = line.strip().split("|")
                if len(parts) == 4 and parts[0] in ids:
                    got[parts[0]] = JobState(parts[0], parts[1], parts[2], parts[3])
        elif len(ids) > 1:  # one purged id makes squeue refuse the whole list: ask one by one
            for i in ids:
                got.update(self.states([i]))
            return got
        missing = [i for i in ids if i not in got]
        if missing:
            r = self._call(["sacct", "-n", "-P", "-X", "-j", ",".join(missing), "-o", "JobID,State,Elapsed"], check=False)
            if r.returncode == 0:
                for line in r.stdout.splitlines():
                    parts = line.strip().split("|")
                    if len(parts) == 3 and parts[0] in missing:
                        got[parts[0]] = JobState(parts[0], parts[1].split()[0], parts[2])
        for i in ids:
            got.setdefault(i, JobState(i, "UNKNOWN"))
        return got

    def queue(self, ids: list[str]) -> list[JobState]:
        return [s for s in self.states(ids).values() if s.live]

    def cancel(self, ids: list[str]) -> None:
        if ids:
            self._call(["scancel", *ids], check=False)


# ----------------------------------------------------------------------------- job records
def _records_path(out: Path) -> Path:
    return out / JOBS_DIR / "jobs.jsonl"


def all_records(out: Path) -> list[dict]:
    """Every submission, oldest first (``OUT/.pipeline/slurm/jobs.jsonl``)."""
    recs: list[dict] = []
    p = _records_path(out)
    if p.is_file():
        for line in p.read_text().splitlines():
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError:  # a torn last line from a killed submitter
                continue
    return recs


def read_records(out: Path) -> dict[str, dict]:
    """Latest submission per stage instance."""
    return {rec["instance"]: rec for rec in all_records(out)}


def task_jobs(out: Path, name: str, key: str, tasks: int) -> dict[int, str]:
    """Latest array-task job id (``ARRAY_K``) of each task of stage ``name`` split into ``tasks``."""
    got: dict[int, str] = {}
    for rec in all_records(out):
        if rec["instance"] == name and rec.get("key") == key and rec.get("tasks") == tasks and rec.get("array_job"):
            got.update({k: f"{rec['array_job']}_{k}" for k in rec.get("array_tasks", [])})
    return got


def _append_record(out: Path, rec: dict) -> None:
    p = _records_path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a") as f:
        f.write(json.dumps(rec) + "\n")
        f.flush()
        os.fsync(f.fileno())


def job_log(out: Path, name: str, job_id: str) -> Path:
    return out / LOG_DIR / f"{name}-{job_id}.log"


# ----------------------------------------------------------------------------- batch scripts
def stage_resources(plan: Plan, inst: Instance) -> Resources:
    """What the job of ``inst`` asks for: its ``resources:`` over the pipeline's ``slurm:`` block over the
    built-in, whose CPU count is the pipeline's pinned ``threads:`` (the threads its stage runs)."""
    return plan.spec.slurm.resolve(inst.stage.kind, inst.stage.resources, threads=plan.spec.threads)


def sbatch_options(res: Resources, *, name: str, log: str, deps: list[str], requeue: bool, requeue_before_s: int) -> list[str]:
    """``#SBATCH`` options of one stage's job."""
    opts = [f"--job-name={name}", f"--output={log}", "--open-mode=append", f"--chdir={os.getcwd()}",
            f"--nodes={res.nodes}", "--ntasks-per-node=1", f"--cpus-per-task={res.cpus_per_task}"]
    if res.gpus_per_node:
        opts.append(f"--gpus-per-node={res.gpus_per_node}")
    for field, flag in (("mem", "mem"), ("time", "time"), ("partition", "partition"), ("account", "account"), ("qos", "qos")):
        v = getattr(res, field)
        if v is not None:
            opts.append(f"--{flag}={v}")
    if deps:
        opts += [f"--dependency=afterok:{':'.join(deps)}", "--kill-on-invalid-dep=yes"]
    if requeue:
        opts += ["--requeue", f"--signal=B:USR1@{requeue_before_s}"]
    return opts + list(res.extra or [])


def stage_argv(plan: Plan, inst: Instance, res: Resources, more: Sequence[str] = ()) -> tuple[list[str], bool]:
    """The command of one job and whether it must be started through ``srun`` (one launcher per node);
    ``more``: further ``micota.pipeline.exec`` arguments (``--task``, ``--finish``)."""
    cfg = write_config(plan, inst)
    launcher = inst.launcher or LauncherSpec()
    tail = ["-m", "micota.pipeline.exec", inst.stage.kind, str(cfg), *inputs_args(plan, inst), *more]
    if (res.nodes or 1) <= 1:
        return launcher_command(launcher, inst.stage.kind, cfg) + inputs_args(plan, inst) + list(more), False
    per_node = launcher.num_processes
    if launcher.type == "accelerate":
        cmd = [sys.executable, "-m", "accelerate.commands.launch"]
        if launcher.config_file:
            cmd += ["--config_file", launcher.config_file]
        cmd += ["--num_processes", "$((SLURM_JOB_NUM_NODES * %d))" % per_node, "--num_machines", "$SLURM_JOB_NUM_NODES",
                "--machine_rank", "$SLURM_NODEID", "--main_process_ip", "$MASTER_ADDR",
                "--main_process_port", "$MASTER_PORT", *launcher.args]
        return cmd + tail, True
    if launcher.type == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--nnodes=$SLURM_JOB_NUM_NODES",
                f"--nproc_per_node={per_node}", "--rdzv_backend=c10d", "--rdzv_endpoint=$MASTER_ADDR:$MASTER_PORT",
                "--rdzv_id=$SLURM_JOB_ID", *launcher.args] + tail, True
    raise UserError(f"stages.{inst.stage.name}.resources.nodes: {res.nodes} nodes need a launcher "
                    "(launcher: {type: torchrun} or {type: accelerate}) to start one process group per node")


def _q(arg: str) -> str:
    """Quote for bash, keeping ``$VAR``/``$((..))`` expansions of the per-node launcher arguments."""
    return f'"{arg}"' if "$" in arg and not any(c in arg for c in '"`\\') else shlex.quote(arg)


def batch_script(plan: Plan, inst: Instance, res: Resources, opts: list[str], more: Sequence[str] = ()) -> str:
    argv, multinode = stage_argv(plan, inst, res, more)
    lines = ["#!/bin/bash", *(f"#SBATCH {o}" for o in opts),
             f"# micota stage {inst.name} ({inst.stage.kind}), key {inst.key}",
             'export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"',
             'echo "micota: job $SLURM_JOB_ID on $(hostname) (restart ${SLURM_RESTART_COUNT:-0})"',
             '_requeue() { echo "micota: time limit or preemption near: requeueing job $SLURM_JOB_ID"; '
             'scontrol requeue "$SLURM_JOB_ID"; }',
             "trap _requeue USR1"]
    cmd = " ".join(_q(a) for a in argv)
    if multinode:
        lines += ['export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
                  f"export MASTER_PORT={RDZV_PORT}",
                  # single quotes: $SLURM_NODEID must expand on each node, not here
                  f"srun --nodes=$SLURM_JOB_NUM_NODES --ntasks-per-node=1 bash -c {shlex.quote(cmd)} &"]
    else:
        lines.append(f"{cmd} &")
    # the stage runs in the background so that the USR1 trap fires while it runs
    lines += ["child=$!", "wait $child; rc=$?",
              "while kill -0 $child 2>/dev/null; do wait $child; rc=$?; done", "exit $rc", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the executor
class SlurmExecutor:
    def __init__(self, slurm: Slurm | None = None):
        self.slurm = slurm or Slurm()
        self.tasks: dict[str, dict[int, str]] = {}  # split stage -> {task: array-task job id} being waited on

    def _sbatch(self, plan: Plan, inst: Instance, res: Resources, deps: list[str], *, suffix: str = "",
                more: Sequence[str] = (), array: list[int] | None = None) -> str:
        """Write ``<instance><suffix>.sbatch`` and submit it; returns the job (array) id."""
        settings = plan.spec.slurm
        logs = plan.out / LOG_DIR
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{inst.name}{suffix}-{'%A_%a' if array else '%j'}.log"
        opts = sbatch_options(res, name=f"{plan.spec.name}:{inst.name}{suffix}"[:120], log=str(log),
                              deps=deps, requeue=settings.requeue, requeue_before_s=settings.requeue_before_s)
        if array:
            opts.append(f"--array={','.join(map(str, array))}")
        script = plan.out / JOBS_DIR / f"{inst.name}{suffix}.sbatch"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(batch_script(plan, inst, res, opts, more))
        return self.slurm.submit(script)

    def _submit(self, plan: Plan, inst: Instance, deps: list[str]) -> str:
        res = stage_resources(plan, inst)
        job = self._sbatch(plan, inst, res, deps)
        _append_record(plan.out, {"instance": inst.name, "key": inst.key, "job_id": job, "dir": inst.dir.name,
                                  "log": str(job_log(plan.out, inst.name, job)), "submitted": time.time()})
        return job

    def _submit_split(self, plan: Plan, inst: Instance, res: Resources, deps: list[str], echo: Echo) -> str:
        """A stage split into ``res.array`` tasks: one job array of the unfinished tasks not still queued
        or running, then a finish job after all of them; returns the finish job's id (what dependants
        and the waiter follow)."""
        from micota.generation.split import tasks_complete

        n = res.array or 1
        assert inst.config is not None
        inst.config = inst.config.model_copy(update={"tasks": n, "task": None})
        latest = task_jobs(plan.out, inst.name, inst.key, n)
        todo = [k for k, ok in enumerate(tasks_complete(inst.dir, n)) if not ok]
        states = self.slurm.states([latest[k] for k in todo if k in latest])
        live = {k: latest[k] for k in todo if k in latest and states[latest[k]].live}
        again = [k for k in todo if k not in live]
        old = read_records(plan.out).get(inst.name)
        if old and old.get("key") == inst.key and old.get("tasks") == n and not again \
                and self.slurm.states([old["job_id"]])[old["job_id"]].live:
            echo(f"[slurm] {inst.name}: tasks {sorted(live)} and finish job {old['job_id']} still queued or running "
                 "(not resubmitted)")
            self.tasks[inst.name] = live
            return old["job_id"]
        if old and old.get("key") == inst.key and old.get("tasks"):
            self.slurm.cancel([old["job_id"]])  # a finish job waiting on a task that died: replaced below
        array = self._sbatch(plan, inst, res, deps, more=["--task", "$SLURM_ARRAY_TASK_ID"], array=again) if again else None
        self.tasks[inst.name] = {**live, **{k: f"{array}_{k}" for k in again}}
        finish_res = res.model_copy(update={"nodes": 1, "gpus_per_node": 0, "cpus_per_task": 1, "array": None})
        finish = self._sbatch(plan, inst, finish_res, deps + ([array] if array else []) + list(live.values()),
                              suffix="-finish", more=["--finish"])
        _append_record(plan.out, {"instance": inst.name, "key": inst.key, "job_id": finish, "dir": inst.dir.name,
                                  "log": str(job_log(plan.out, f"{inst.name}-finish", finish)), "tasks": n,
                                  "array_job": array, "array_tasks": again, "submitted": time.time()})
        echo(f"[slurm] {inst.name} ({inst.stage.kind}): {n} tasks; submitted array job {array} for tasks {again}"
             f"{', still running: ' + ' '.join(live.values()) if live else ''}{' after ' + ','.join(deps) if deps else ''}; "
             f"finish job {finish}")
        return finish

    def run(self, plan: Plan, todo: list[Instance], done: Done, echo: Echo) -> None:
        for kind in plan.spec.slurm.defaults:
            from micota.pipeline.stages import get_stage_kind

            get_stage_kind(kind)  # slurm.defaults names a real kind
        for inst in todo:  # before anything is submitted
            check_split(plan, inst)
        records = read_records(plan.out)
        keys = {i.name: i.key for i in plan.instances}
        old = {n: r["job_id"] for n, r in records.items() if r.get("key") == keys.get(n)}
        live_old = {j for j, s in self.slurm.states(sorted(set(old.values()))).items() if s.live}
        jobs: dict[str, str] = {}
        for inst in todo:
            deps = [jobs[d] for d in inst.deps if d in jobs]
            res = stage_resources(plan, inst)
            if (res.array or 1) > 1:
                jobs[inst.name] = self._submit_split(plan, inst, res, deps, echo)
                continue
            if old.get(inst.name) in live_old:
                jobs[inst.name] = old[inst.name]
                echo(f"[slurm] {inst.name}: job {jobs[inst.name]} is still queued or running (not resubmitted)")
                continue
            jobs[inst.name] = self._submit(plan, inst, deps)
            echo(f"[slurm] {inst.name} ({inst.stage.kind}): submitted job {jobs[inst.name]}"
                 f"{' after ' + ','.join(deps) if deps else ''}")
        self._wait(plan, todo, jobs, done, echo)

    def _failed_task(self, plan: Plan, name: str, states: dict[str, JobState], seen: dict[str, str], echo: Echo) -> str | None:
        """Follow the array tasks of a split stage: echo state changes; the first task that ended
        without completing, as a failure line (finished tasks are dropped from the watch)."""
        watch = self.tasks.get(name, {})
        for k, job in sorted(watch.items()):
            st = states[job]
            if seen.get(job) != st.state:
                seen[job] = st.state
                echo(f"[slurm] {name}[{k}]: job {job} {st.state}")
            if st.live:
                continue
            del watch[k]
            if st.state != "COMPLETED":
                from micota.generation.split import task_dir

                inst = plan.get(name)
                n = stage_resources(plan, inst).array or 1
                if st.state == "UNKNOWN" and is_complete(task_dir(inst.dir, k, n)):  # purged from the queue's memory
                    continue
                return f"stage {name} ({inst.stage.kind}) task {k} job {job} {st.state}; log: {job_log(plan.out, name, job)}"
        return None

    def _wait(self, plan: Plan, todo: list[Instance], jobs: dict[str, str], done: Done, echo: Echo) -> None:
        pending = {i.name: i for i in todo}
        seen: dict[str, str] = {}
        failed: list[str] = []
        try:
            while pending:
                ids = [jobs[n] for n in pending] + [j for n in pending for j in self.tasks.get(n, {}).values()]
                states = self.slurm.states(ids)
                for name in list(pending):
                    if name not in pending:  # cancelled above, with a failed input
                        continue
                    inst, st = pending[name], states[jobs[name]]
                    bad_task = self._failed_task(plan, name, states, seen, echo)
                    if seen.get(name) != st.state:
                        seen[name] = st.state
                        echo(f"[slurm] {name}: job {jobs[name]} {st.state}"
                             f"{' (' + st.reason + ')' if st.reason not in ('', 'None') else ''}")
                    if st.live and not bad_task:
                        continue
                    del pending[name]
                    if not bad_task and st.state in ("COMPLETED", "UNKNOWN") and is_complete(inst.dir):
                        done(inst)  # UNKNOWN: purged from the queue's memory
                        continue
                    failed.append(bad_task or f"stage {name} ({inst.stage.kind}) job {jobs[name]} {st.state}; "
                                  f"log: {job_log(plan.out, name + ('-finish' if name in self.tasks else ''), jobs[name])}")
                    stop = [n for n in pending if n in _downstream_of(plan, name)]
                    # a failed task: its finish job (waiting on it) goes too; the task's siblings keep running
                    self.slurm.cancel(([jobs[name]] if bad_task else []) + [jobs[n] for n in stop])
                    for n in stop:
                        del pending[n]
                        echo(f"[slurm] {n}: cancelled (input stage {name} failed)")
                if pending:
                    time.sleep(plan.spec.slurm.poll_s)
        except KeyboardInterrupt:
            echo(f"[slurm] stopped waiting; the jobs stay queued. Follow them with: micota run {plan.spec.source} "
                 f"--out {plan.out} --status (or --cancel)")
            raise
        if failed:
            more = f" (and {len(failed) - 1} more failed: see --status)" if len(failed) > 1 else ""
            raise UserError(failed[0] + more)


def check_split(plan: Plan, inst: Instance) -> None:
    """A stage with ``resources.array`` > 1 must be of a kind that can be split (generate), and its
    config's own ``tasks`` (if set) must agree."""
    n = stage_resources(plan, inst).array or 1
    if n <= 1:
        return
    if inst.kind is None or inst.kind.split is None:
        raise UserError(f"stages.{inst.stage.name}.resources.array: kind {inst.stage.kind!r} cannot be split into "
                        "array tasks (generate can)")
    if getattr(inst.config, "tasks", 1) not in (1, n):
        raise UserError(f"stages.{inst.stage.name}: tasks: {inst.config.tasks} contradicts resources.array: {n}")


def _downstream_of(plan: Plan, name: str) -> set[str]:
    down = {name}
    for inst in plan.instances:
        if any(d in down for d in inst.deps):
            down.add(inst.name)
    return down - {name}


# ----------------------------------------------------------------------------- --status / --cancel
def status_rows(plan: Plan, slurm: Slurm | None = None) -> list[dict]:
    """One row per stage instance: plan status, and its latest job's id, state, elapsed time and log;
    a stage split into array tasks also has one row per task (``stage[K]``: its output, latest job)."""
    from micota.generation.split import task_dir

    slurm = slurm or Slurm()
    records = read_records(plan.out)
    keys = {i.name: i.key for i in plan.instances}
    current = {n: r for n, r in records.items() if r.get("key") == keys.get(n)}
    tasks = {n: task_jobs(plan.out, n, r["key"], r["tasks"]) for n, r in current.items() if r.get("tasks")}
    ids = {r["job_id"] for r in current.values()} | {j for t in tasks.values() for j in t.values()}
    states = slurm.states(sorted(ids)) if ids else {}

    def row(stage: str, status: str, job: str, log: str) -> dict:
        st = states.get(job)
        return {"stage": stage, "status": status, "job": job, "state": st.state if st else "",
                "elapsed": st.elapsed if st else "", "log": log}

    rows = []
    for inst in plan.instances:
        rec = current.get(inst.name)
        rows.append(row(inst.name, inst.status, rec["job_id"] if rec else "", rec["log"] if rec else ""))
        for k in range(rec.get("tasks") or 0) if rec else ():
            d, job = task_dir(inst.dir, k, rec["tasks"]), tasks[inst.name].get(k, "")
            status = "cached" if is_complete(d) else "resume" if d.exists() else "run"
            rows.append(row(f"{inst.name}[{k}]", status, job, str(job_log(plan.out, inst.name, job)) if job else ""))
    return rows


def format_status(rows: list[dict]) -> str:
    w = max(len(r["stage"]) for r in rows)
    lines = [f"{'stage':<{w}}  {'output':<6}  {'job':>8}  {'state':<11}  {'elapsed':>10}  log", "-" * (w + 60)]
    for r in rows:
        lines.append(f"{r['stage']:<{w}}  {r['status']:<6}  {r['job']:>8}  {r['state']:<11}  {r['elapsed']:>10}  {r['log']}")
    bad = [r for r in rows if r["state"] in ("FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
                                             "DEADLINE") and r["status"] != "cached"]
    for r in bad:
        lines.append(f"failed: {r['stage']} (job {r['job']}, {r['state']}); log: {r['log']}")
    return "\n".join(lines)


def cancel_jobs(plan: Plan, slurm: Slurm | None = None) -> list[str]:
    """Cancel every queued or running job of this pipeline's output directory; returns their ids."""
    slurm = slurm or Slurm()
    recs = all_records(plan.out)
    ids = sorted({r["job_id"] for r in recs} | {f"{r['array_job']}_{k}" for r in recs if r.get("array_job")
                                                for k in r.get("array_tasks", [])})
    live = [j for j, s in slurm.states(ids).items() if s.live]
    slurm.cancel(live)
    return live


__all__ = ["Slurm", "JobState", "SlurmExecutor", "status_rows", "format_status", "cancel_jobs", "read_records",
           "all_records", "task_jobs", "check_split", "batch_script", "sbatch_options", "stage_resources"]
