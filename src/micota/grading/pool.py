"""Grading in worker processes with a hard per-item timeout.

sympy can take unbounded time (and memory) on some inputs — ``\\boxed{9^{9^{9}}}`` makes it build
a 370-million-digit integer — and math-verify's own timeouts use ``signal.alarm``, which only works
on the main thread of the main interpreter. So every grade runs in a worker process:

- a worker is a fresh ``python`` subprocess (no fork of a possibly multi-threaded parent, no
  re-import of the caller's ``__main__``) talking over two pipes; graders travel by reference
  (module + name), so a mode must be a module-level function;
- each worker warms up (one parse + verify) and reports ready before it gets work, so start-up
  time never counts against an item;
- the parent hands out one item at a time per worker and waits on the pipes; an item not
  answered within ``timeout`` seconds is graded wrong with reason ``timeout``, its worker is
  killed (SIGKILL) and replaced; a worker that dies is replaced and its item graded wrong with
  reason ``crashed``.

The pool persists between calls (module-level, guarded by a lock), so repeated
:func:`micota.grading.grade` calls cost one round trip each; calls from several threads are
served one after another. :func:`shutdown` stops the workers; they also stop at interpreter exit
or when the parent dies: a watchdog thread polls the parent's pid (and, on Linux, the kernel sends
SIGKILL on the parent's death when the pool was started from the main thread), so a worker busy in
sympy never outlives a killed parent. Each worker runs under an address-space limit
(:data:`WORKER_MEMORY_BYTES`) and a CPU-time allowance per item (:data:`WORKER_CPU_SECONDS`), and
exits quietly (no traceback) when its parent goes away.
"""

from __future__ import annotations

import atexit
import itertools
import os
import subprocess
import sys
import threading
import time
from collections import deque
from multiprocessing.connection import Connection, wait
from typing import Any, Sequence

from micota.grading.modes import GradeResult, Grader

_START_TIMEOUT = 120.0  # seconds a new worker may take to start (python + sympy on a loaded machine)
WORKER_MEMORY_BYTES = 4 << 30  # address space per worker; sympy building a giant integer hits MemoryError
WORKER_CPU_SECONDS = 120  # CPU seconds one item may use before the kernel ends the worker (SIGXCPU)
_task_ids = itertools.count()


def _guard_worker(parent: int, pdeathsig: bool) -> None:
    """Die with the parent (parent-death signal + a pid watchdog) and set resource limits."""
    import resource
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    if pdeathsig and sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before we got here
        os._exit(0)

    def watchdog() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    except (ValueError, OSError):
        pass


def _allow_cpu(seconds: int) -> None:
    """Let the next item use ``seconds`` more CPU seconds (soft RLIMIT_CPU, raised per item)."""
    import resource

    used = resource.getrusage(resource.RUSAGE_SELF)
    try:
        resource.setrlimit(resource.RLIMIT_CPU, (int(used.ru_utime + used.ru_stime) + seconds, resource.RLIM_INFINITY))
    except (ValueError, OSError):
        pass


def _worker_main(rfd: int, wfd: int, parent: int = 0, pdeathsig: bool = False) -> None:
    """Worker loop: receive (task_id, grader, completion, reference), send (task_id, GradeResult)."""
    try:
        _worker_loop(rfd, wfd, parent or os.getppid(), pdeathsig)
    except (KeyboardInterrupt, EOFError, OSError):
        pass  # the parent went away or stopped us: exit quietly
    os._exit(0)


def _worker_loop(rfd: int, wfd: int, parent: int, pdeathsig: bool) -> None:
    import logging

    _guard_worker(parent, pdeathsig)
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled" warnings
    from micota.grading.modes import grade_default

    inbox, outbox = Connection(rfd, writable=False), Connection(wfd, readable=False)
    _allow_cpu(WORKER_CPU_SECONDS)
    grade_default("\\boxed{1}", "1")  # warm up sympy / the LaTeX parser before reporting ready
    outbox.send("ready")
    while True:
        msg = inbox.recv()  # EOFError when the parent is gone
        if msg is None:
            return
        task_id, grader, completion, reference = msg
        _allow_cpu(WORKER_CPU_SECONDS)
        try:
            res = grader(completion, reference)
        except Exception:  # a bug or an input sympy chokes on: wrong, never fatal, counted as an error (MemoryError under the worker's limit too)
            res = GradeResult(False, None, "error")
        outbox.send((task_id, res))


class _Worker:
    def __init__(self) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        path = os.pathsep.join(p or os.getcwd() for p in sys.path)
        pdeathsig = threading.current_thread() is threading.main_thread()  # PDEATHSIG follows the forking thread
        code = (f"from micota.grading.pool import _worker_main; "
                f"_worker_main({to_child_r}, {from_child_w}, {os.getpid()}, {pdeathsig})")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code], pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": path}, start_new_session=True)
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self.send_conn = Connection(to_child_w, readable=False)
        self.conn = Connection(from_child_r, writable=False)
        self.ready = False
        self.started = time.monotonic()
        self.task: tuple[int, int, float] | None = None  # (task_id, item index, deadline)

    @property
    def dead(self) -> bool:
        return self.conn.closed

    def kill(self) -> None:
        if self.dead:
            return
        self.proc.kill()
        self.proc.wait(10)
        self.send_conn.close()
        self.conn.close()

    def stop(self) -> None:
        if self.dead:
            return
        try:
            self.send_conn.send(None)
            self.proc.wait(2)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


class GraderPool:
    """A set of grading worker processes; :meth:`run` grades items with a hard timeout each."""

    def __init__(self) -> None:
        self._workers: list[_Worker] = []
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def _fresh(self) -> _Worker:
        return _Worker()

    def run(self, items: Sequence[tuple[Grader, str, str]], *, workers: int, timeout: float,
            bar: Any = None) -> list[GradeResult]:
        """Grade ``items`` on ``workers`` processes, in input order; ``bar.update(1)`` per finished item."""
        if not items:
            return []
        with self._lock:
            if self._pid != os.getpid():  # a forked child must not touch its parent's workers
                self._workers, self._pid = [], os.getpid()
            for w in self._workers:
                if w.proc.poll() is not None:  # died while idle since the last call
                    w.kill()
            self._workers = [w for w in self._workers if not w.dead]
            while len(self._workers) < workers:
                self._workers.append(self._fresh())
            use = self._workers[:workers]
            results: list[GradeResult | None] = [None] * len(items)
            pending = deque(range(len(items)))
            try:
                while pending or any(w.task for w in use):
                    for w in use:
                        if w.ready and w.task is None and pending:
                            i = pending.popleft()
                            grader, completion, reference = items[i]
                            tid = next(_task_ids)
                            try:
                                w.send_conn.send((tid, grader, completion, reference))
                            except OSError:  # died while idle: requeue the item, replace below
                                pending.appendleft(i)
                                w.kill()
                                continue
                            w.task = (tid, i, time.monotonic() + timeout)
                    self._replace_dead(use)
                    now = time.monotonic()
                    limits = [w.task[2] for w in use if w.task] + [w.started + _START_TIMEOUT for w in use if not w.ready]
                    ready = wait([w.conn for w in use], timeout=max(0.0, min(limits, default=now + 1.0) - now))
                    now = time.monotonic()
                    for w in use:
                        done = self._collect(w, w.conn in ready, now, results)
                        if done and bar is not None:
                            bar.update(done)
                    self._replace_dead(use)
            except BaseException:
                for w in use:  # workers busy with an abandoned item would answer later: drop them
                    if w.task is not None or not w.ready:
                        w.kill()
                self._workers = [w for w in self._workers if not w.dead]
                raise
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def _replace_dead(self, use: list[_Worker]) -> None:
        for k, w in enumerate(use):
            if w.dead:  # killed or died: replace it in place
                fresh = self._fresh()
                self._workers[self._workers.index(w)] = fresh
                use[k] = fresh

    def _collect(self, w: _Worker, readable: bool, now: float, results: list[GradeResult | None]) -> int:
        """Handle one worker after a wait; returns how many items it finished (0 or 1)."""
        if readable:
            try:
                msg = w.conn.recv()
            except (EOFError, OSError):
                msg = None
            if msg == "ready":
                w.ready = True
                return 0
            if msg is None:  # the worker died
                if not w.ready:
                    w.kill()
                    raise RuntimeError("a grading worker process died while starting")
                return self._fail(w, "crashed", results)
            tid, res = msg
            if w.task is not None and w.task[0] == tid:
                results[w.task[1]] = res
                w.task = None
                return 1
            return 0  # a stale answer to an abandoned item
        if w.task is not None and now >= w.task[2]:
            return self._fail(w, "timeout", results)
        if not w.ready and now >= w.started + _START_TIMEOUT:
            w.kill()
            raise RuntimeError(f"a grading worker process did not start within {_START_TIMEOUT:.0f}s")
        return 0

    @staticmethod
    def _fail(w: _Worker, reason: str, results: list[GradeResult | None]) -> int:
        finished = 0
        if w.task is not None:
            results[w.task[1]] = GradeResult(False, None, reason)
            finished = 1
        w.task = None
        w.kill()
        return finished

    def shutdown(self) -> None:
        with self._lock:
            if os.getpid() == self._pid:
                for w in self._workers:
                    w.stop()
            self._workers = []


POOL = GraderPool()
atexit.register(POOL.shutdown)


def shutdown() -> None:
    """Stop the grading worker processes (a later grade starts new ones)."""
    POOL.shutdown()
