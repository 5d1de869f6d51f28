"""Incremental reader of a growing `metrics.jsonl`: complete lines only, from a byte offset."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class MetricsTail:
    """Returns the events appended since the last read; a shrunk or replaced file starts over."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.reset = False  # set by `read_new` when the file was truncated or replaced
        self._inode: int | None = None

    def read_new(self) -> list[dict[str, Any]]:
        """Parse the complete lines appended since the last call (a torn last line waits)."""
        self.reset = False
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return []
        if st.st_size < self.offset or (self._inode is not None and st.st_ino != self._inode):
            self.offset, self.reset = 0, True
        self._inode = st.st_ino
        if st.st_size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(st.st_size - self.offset)
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        events = []
        for line in data[: end + 1].splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(record, dict):
                events.append(record)
        return events
