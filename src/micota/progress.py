"""Progress for long loops, and what the CLI says when one is interrupted.

:func:`progress_bar` is a tqdm bar on stderr whose total is the whole job (``N``) and whose start is
the work already on disk (``k``), so a resumed run says ``resuming k/N`` and its ETA counts only what
is left. The innermost live bar is remembered: on Ctrl-C the CLI prints
``interrupted — rerun the same command to resume (k/N done)`` from it (:func:`interrupted_line`).

Backends that decode token by token call :func:`decode_step` so a bar moves inside a long batch
(``decoding 312/1024 tokens``) instead of once per batch.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Iterator

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
