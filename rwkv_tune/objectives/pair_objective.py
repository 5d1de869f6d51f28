"""What DPO and ORPO share: drawing pair batches with a resumable cursor, and held-out evaluation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from rwkv_tune.objectives.base import Cursor
from rwkv_tune.objectives.pairs import Pair, pair_batch


class PairObjective:
    """An objective on (prompt, chosen, rejected) pairs; subclasses supply `name` and `loss`."""

    name = "pairs"

    def __init__(self, pairs: list[Pair], *, beta: float = 0.1, batch_size: int = 4, seed: int = 0,
                 device: torch.device | str = "cpu"):
        self.pairs, self.beta, self.batch_size, self.device = pairs, beta, batch_size, device
        self.cursor = Cursor(len(pairs), seed)

    def batches(self, model: torch.nn.Module | None = None) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            yield pair_batch([self.pairs[i] for i in self.cursor.take(self.batch_size)], self.device)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, pairs: list[Pair], batch_size: int = 8) -> dict[str, float]:
        """Mean loss and fields over held-out pairs (the `eval` event), in eval mode, no gradients."""
        was_training = model.training
        model.eval()
        totals: dict[str, float] = {}
        for start in range(0, len(pairs), batch_size):
            part = pairs[start:start + batch_size]
            loss, fields = self.loss(model, pair_batch(part, self.device))
            for key, value in {"loss": float(loss), **fields}.items():
                totals[key] = totals.get(key, 0.0) + value * len(part)
        model.train(was_training)
        return {key: value / len(pairs) for key, value in totals.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"cursor": self.cursor.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cursor.load_state_dict(state["cursor"])
