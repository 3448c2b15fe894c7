"""Progress for long loops, and what the CLI says when one is interrupted.

:func:`progress_bar` is a tqdm bar on stderr whose total is the whole job (``N``) and whose start is
the work already on disk (``k``), so a resumed run says ``resuming k/N`` and its ETA counts only what
is left. The innermost live bar is remembered: on Ctrl-C the CLI prints
``interrupted — rerun the same command to resume (k/N done)`` from it (:func:`interrupted_line`).

A loop that writes a batch and then counts it on its bar does both inside :func:`counted_write`, which
holds Ctrl-C until the pair is done, so the line never reports fewer rows than are on disk.

Backends that decode token by token call :func:`decode_step` so a bar moves inside a long batch
(``decoding 312/1024 tokens``) instead of once per batch.

:func:`sha256_files` hashes input files (a pipeline's external inputs, a merge search's models) with a
bar in MiB when more than :data:`HASH_BAR_MIN` bytes are not in the digest cache yet.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

HASH_BAR_MIN = 1 << 30  # bytes to hash before a bar is worth showing

_bars: list[Any] = []  # live bars, innermost last
_last: dict[str, Any] = {}  # the last bar that closed by an exception: what the interrupt line reports


@contextmanager
def progress_bar(total: int, *, desc: str, unit: str = "sample", done: int = 0) -> Iterator[Any]:
    """A tqdm bar for ``total`` units of which ``done`` are already finished (printed as resuming)."""
    from tqdm import tqdm

    if done:
        print(f"{desc}: resuming {done}/{total} {unit}s already done", file=sys.stderr, flush=True)
    bar = tqdm(total=total, initial=done, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 30.0, smoothing=0.1)
    _bars.append(bar)
    try:
        yield bar
    except BaseException:
        _last.update(desc=desc, done=int(bar.n), total=int(bar.total or 0), unit=unit)
        raise
    finally:
        _bars.remove(bar)
        bar.close()


@contextmanager
def counted_write() -> Iterator[None]:
    """Hold SIGINT (Ctrl-C) for the block and deliver it as KeyboardInterrupt when the block ends.

    Only in the main thread and only while Python's default handler is installed (elsewhere the block
    runs as is)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    held: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if held:
        raise KeyboardInterrupt


def decode_step(step: int, max_steps: int) -> None:
    """Called once per decoding step of a batch: shows the step on the innermost bar (rate-limited)."""
    if _bars:
        bar = _bars[-1]
        bar.set_postfix_str(f"decoding {step}/{max_steps} tokens", refresh=False)
        bar.update(0)  # refreshes only when mininterval has passed


def interrupted_line() -> str:
    """The one line printed on Ctrl-C."""
    where = f" ({_last['done']}/{_last['total']} {_last['unit']}s done)" if _last.get("total") else ""
    return f"interrupted — rerun the same command to resume{where}"


def sha256_files(files: list[Path], *, desc: str = "hashing inputs") -> dict[Path, str]:
    """``{file: sha256}`` (:func:`micota.io.sha256_file`: large files once, then from the digest cache)."""
    from micota.io import cached_sha256, sha256_file

    todo = sum(f.stat().st_size for f in files if cached_sha256(f) is None)
    if todo < HASH_BAR_MIN:
        return {f: sha256_file(f) for f in files}
    with progress_bar(todo >> 20, desc=desc, unit="MiB") as bar:
        return {f: sha256_file(f, on_bytes=lambda n: bar.update(n / 2**20)) for f in files}
