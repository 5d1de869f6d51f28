"""Messages from the dashboard's worker threads to the app (posting a message is thread-safe)."""

from __future__ import annotations

from typing import Any

from textual.message import Message


class EventsRead(Message):
    """New complete events from metrics.jsonl, in file order (never dropped)."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        super().__init__()
        self.events = events


class TailReset(Message):
    """metrics.jsonl was truncated or replaced: start over."""


class TailFailed(Message):
    """Reading metrics.jsonl failed (the tail keeps trying)."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class MergeProgressed(Message):
    """A merge callback reported progress over tensors."""

    def __init__(self, done: int, total: int) -> None:
        super().__init__()
        self.done, self.total = done, total

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, MergeProgressed)


class MergeFinished(Message):
    """A merge started from the dashboard ended: a result {path, verified, report} or an error."""

    def __init__(self, result: dict[str, Any] | None, error: str | None) -> None:
        super().__init__()
        self.result, self.error = result, error
