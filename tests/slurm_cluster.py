"""A real single-node Slurm cluster for the tests: munged, slurmctld and slurmd in a temporary directory.

Debian's ``slurm-wlm`` and ``munge`` packages are installed with apt-get when absent (``.ci/run``
does the same). Everything the daemons write (key, sockets, state, spool, logs, pid files) lives
under the directory given; ports are picked free, so two clusters never collide. No cgroups:
``proctrack/linuxproc`` and ``task/none``. The node has this machine's real core count.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

NODE = "micota0"
PARTITION = "debug"


class SlurmUnavailable(RuntimeError):
    """Slurm could not be installed or started (the message is the one line the test prints)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_installed() -> None:
    if all(shutil.which(b) for b in ("sbatch", "slurmctld", "slurmd", "munged")):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"]):
        try:
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise SlurmUnavailable(f"cannot install slurm-wlm/munge ({' '.join(cmd)}: {e})") from None
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or [""]
            raise SlurmUnavailable(f"cannot install slurm-wlm/munge ({' '.join(cmd)} exited {r.returncode}: {tail[0]})")
    if not shutil.which("sbatch"):
        raise SlurmUnavailable("slurm-wlm installed but sbatch is not on PATH")


def _mem_mb() -> int:
    with open("/proc/meminfo") as f:
        kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    return max(1024, kb // 1024 - 1024)


class LocalSlurm:
    """``with LocalSlurm(dir) as c:`` starts the daemons and waits until the node is idle; ``c.env`` has
    ``SLURM_CONF`` for clients (sbatch, squeue, ...)."""

    def __init__(self, root: Path, cpus: int | None = None):
        self.root = Path(root)
        self.cpus = cpus or os.cpu_count() or 1
        self.conf = self.root / "slurm.conf"
        self.procs: list[subprocess.Popen] = []
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    # ------------------------------------------------------------------ config
    def _write(self) -> None:
        r = self.root
        for d in ("state", "spool", "log"):
            (r / d).mkdir(parents=True, exist_ok=True)
        key = r / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        host = socket.gethostname()
        self.conf.write_text(f"""\
ClusterName=micota-test
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
# cred_expire: also how long a requeued job waits before it may start again (default 120 s)
CredType=cred/munge
AuthInfo=socket={r / 'munge.socket'},cred_expire=10
StateSaveLocation={r / 'state'}
SlurmdSpoolDir={r / 'spool'}
SlurmctldPidFile={r / 'slurmctld.pid'}
SlurmdPidFile={r / 'slurmd.pid'}
SlurmctldLogFile={r / 'log' / 'slurmctld.log'}
SlurmdLogFile={r / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=3600
KillWait=5
SchedulerParameters=sched_interval=1
NodeName={NODE} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={_mem_mb()} State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
""")

    # ------------------------------------------------------------------ daemons
    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "w")
        self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                           start_new_session=True))

    def _wait(self, what: str, ok, timeout: float = 60) -> None:
        t0 = time.time()
        while time.time() - t0 < timeout:
            if ok():
                return
            for p in self.procs:
                if p.poll() is not None:
                    raise SlurmUnavailable(f"{p.args[0]} exited with code {p.returncode} while waiting for {what} "
                                           f"(logs in {self.root / 'log'})")
            time.sleep(0.3)
        raise SlurmUnavailable(f"local Slurm: timed out waiting for {what} (logs in {self.root / 'log'})")

    def _node_state(self) -> str:
        r = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env, capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""

    def start(self) -> "LocalSlurm":
        ensure_installed()
        self._write()
        r = self.root
        self._spawn("munged", ["munged", "-F", "--force", f"--key-file={r / 'munge.key'}", f"--socket={r / 'munge.socket'}",
                               f"--pid-file={r / 'munged.pid'}", f"--log-file={r / 'log' / 'munged.log'}",
                               f"--seed-file={r / 'munge.seed'}"])
        self._wait("munged", lambda: (r / "munge.socket").exists())
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._wait("slurmctld", lambda: subprocess.run(["scontrol", "ping"], env=self.env, capture_output=True,
                                                        text=True).stdout.count("UP") > 0)
        self._spawn("slurmd", ["slurmd", "-D", "-N", NODE, "-f", str(self.conf)])
        self._wait("an idle node", lambda: self._node_state() in ("idle", "mixed", "allocated"))
        return self

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()

    def __enter__(self) -> "LocalSlurm":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
