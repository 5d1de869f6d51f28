"""The objective interface the training loop calls, and the seeded cursor objectives draw records with.

An objective supplies its batches, its loss and its own event fields; the loop owns the optimizer,
the schedule, checkpoints and the event stream:

    for batch in objective.batches(model):            # dpo/orpo: pair batches; grpo: sampled groups
        loss, fields = objective.loss(model, batch)   # fields: floats for the step event
        loss.backward(); optimizer.step(); …
    trainer_state["objective"] = objective.state_dict()   # data cursor, sampler RNG: exact resume
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Objective(Protocol):
    name: str

    def batches(self, model: torch.nn.Module) -> Iterator[Any]:
        """Endless batches (GRPO samples them from `model`, so they follow the training)."""
        ...

    def loss(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """The scalar loss to backpropagate and the step event's extra fields."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """What a resume needs to draw the same next batches."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ...


class Cursor:
    """Endless passes over n items, each pass in a fresh seeded order; its position is resumable."""

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.epoch, self.position = 0, 0
        self._order = self._make_order()

    def _make_order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def take(self, k: int) -> list[int]:
        """The next k item indices (a pass ends and the next begins as needed)."""
        out = []
        while len(out) < k:
            if self.position >= self.n:
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._make_order()
            out.append(self._order[self.position])
            self.position += 1
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._make_order()
