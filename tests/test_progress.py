"""micota.progress.counted_write: a Ctrl-C during a batch's write is delivered after the batch is counted."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from micota.progress import counted_write, interrupted_line, progress_bar


@pytest.fixture(autouse=True)
def terminal_sigint():
    """The disposition a terminal's Ctrl-C meets (a background job, e.g. CI, inherits SIGINT ignored)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_ctrl_c_inside_the_block_is_held_until_the_count_is_done():
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with progress_bar(10, desc="t") as bar:
            with counted_write():
                steps.append("written")
                os.kill(os.getpid(), signal.SIGINT)  # arrives between the write and the count
                steps.append("counted")
                bar.update(3)
    assert steps == ["written", "counted"]
    assert interrupted_line().endswith("(3/10 samples done)")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_without_a_signal_the_block_runs_and_raises_nothing():
    with counted_write():
        x = 1
    assert x == 1 and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_error_inside_the_block_propagates_and_the_handler_is_restored():
    with pytest.raises(OSError):
        with counted_write():
            raise OSError("disk full")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_outside_the_main_thread_it_changes_nothing():
    seen = []

    def run():
        with counted_write():
            seen.append(signal.getsignal(signal.SIGINT))

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen == [signal.default_int_handler]
