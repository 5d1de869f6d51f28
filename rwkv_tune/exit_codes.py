"""The exit codes of `rwkv-tune` (documented in the README) and how a run's end maps to one.

    0 done · 1 diverged · 2 usage or input error · 3 out of resources (GPU memory, disk)
    130 interrupted (SIGINT, Ctrl-C) · 143 terminated (SIGTERM)

Torch-free.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

DONE, DIVERGED, USAGE, RESOURCES, INTERRUPTED, TERMINATED = 0, 1, 2, 3, 130, 143


def for_run(reason: str, signum: int | None = None) -> int:
    """The exit code for a trainer's result reason (finished | stopped | interrupted | terminated | diverged).

    `signum` is the signal that interrupted the run, where known: SIGTERM gives 143, otherwise 130.
    """
    if reason == "diverged":
        return DIVERGED
    if reason == "terminated" or (reason == "interrupted" and signum == signal.SIGTERM):
        return TERMINATED
    if reason == "interrupted":
        return INTERRUPTED
    return DONE


class SignalLog:
    """The signals this process received while `record_signals()` was active, in order."""

    def __init__(self, read_fd: int):
        self._fd: int | None = read_fd
        self.received: list[int] = []

    def last(self) -> int | None:
        self._drain()
        return self.received[-1] if self.received else None

    def _drain(self) -> None:
        if self._fd is None:
            return
        try:
            while chunk := os.read(self._fd, 64):
                self.received += list(chunk)
        except BlockingIOError:
            pass


@contextmanager
def record_signals() -> Iterator[SignalLog]:
    """Note which signals arrive, whatever Python handler (the trainer's) acts on them.

    Python writes each signal's number to the wakeup fd before any handler runs, so the CLI can tell
    SIGINT from SIGTERM without the trainer reporting it. Main thread only (elsewhere: records nothing).
    """
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    log = SignalLog(read_fd)
    try:
        previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except ValueError:  # not the main thread
        previous = None
    try:
        yield log
    finally:
        log._drain()
        log._fd = None
        if previous is not None:
            signal.set_wakeup_fd(previous)
        os.close(read_fd)
        os.close(write_fd)
