"""The dashboard's control file: one word (save, stop, pause, resume) that the trainer acts on between steps.

Rank 0 reads and deletes `<run>/control`; every rank gets the same word, so all ranks save, stop or pause together.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PAUSE_POLL_S = 0.2


class ControlFile:
    def __init__(self, path: Path, *, rank: int = 0, world_size: int = 1, engine: Any = None):
        self.path = path
        self.rank, self.world_size, self.engine = rank, world_size, engine

    def clear(self) -> None:
        """Drop a stale word from an earlier session: it must not act on this one."""
        if self.rank == 0:
            self.path.unlink(missing_ok=True)

    def read(self) -> str | None:
        """The word written since the last read (None: none), the same on every rank."""
        word = None
        if self.rank == 0 and self.path.exists():
            word = self.path.read_text().strip()
            self.path.unlink(missing_ok=True)
        if self.engine is not None and self.world_size > 1:
            word = self.engine.broadcast(word)
        return word

    def any_rank(self, flag: bool) -> bool:
        """Whether `flag` is set on any rank (every rank calls it): a signal that reached one rank stops all
        of them at the same step, so their collectives (and checkpoint) stay in step."""
        if self.engine is None or self.world_size == 1:
            return flag
        return self.engine.sum(float(flag)) > 0

    def poll(self, *, emit: Callable[..., None], save: Callable[[], Any], stopping: Callable[[], bool]) -> bool:
        """Act on a waiting word; True when the run should stop. `pause` blocks here until resume or stop,
        or until `stopping()` (a signal arrived)."""
        word = self.read()
        if word is None:
            return False
        emit("control", action=word)
        if word == "save":
            save()
        elif word == "stop":
            return True
        elif word == "pause":
            while not stopping():
                time.sleep(PAUSE_POLL_S)
                word = self.read()
                if word in ("resume", "pause"):
                    emit("control", action="resume")
                    return False
                if word == "stop":
                    emit("control", action="stop")
                    return True
        return False
