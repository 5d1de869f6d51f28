"""ORPO (Hong et al. 2024): reference-free; NLL of the chosen response plus β times an odds-ratio penalty.

    L = −mean(log P(y_w)) − β·log σ(log odds(y_w) − log odds(y_l)),  odds(y) = P(y) / (1 − P(y))
with P(y) the length-normalised probability exp(mean log-prob of the response tokens), as published
(and as TRL computes it); the NLL term is the per-pair mean token NLL of the chosen response.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from rwkv_tune.objectives.base import Cursor
from rwkv_tune.objectives.logprobs import sequence_logprobs
from rwkv_tune.objectives.pairs import Pair, pair_batch


def log_odds(mean_logp: torch.Tensor) -> torch.Tensor:
    """log(P / (1 − P)) from log P ≤ 0, stable near P = 1."""
    return mean_logp - torch.log1p(-torch.exp(mean_logp).clamp(max=1 - 1e-7))


def orpo_loss(chosen_mean_logp: torch.Tensor, rejected_mean_logp: torch.Tensor,
              beta: float) -> tuple[torch.Tensor, dict[str, float]]:
    """ORPO loss from length-normalised log-probs [B]; and its event fields."""
    ratio = log_odds(chosen_mean_logp) - log_odds(rejected_mean_logp)
    nll = -chosen_mean_logp.mean()
    penalty = -F.logsigmoid(ratio).mean()
    ratio = ratio.detach()
    return nll + beta * penalty, {"nll_chosen": float(nll.detach()), "odds_ratio_loss": float(penalty.detach()),
                                  "log_odds_ratio": float(ratio.mean()),
                                  "pref_accuracy": float((ratio > 0).float().mean())}


class ORPO:
    """Odds-ratio preference optimisation: SFT on chosen and a preference penalty in one loss, no reference."""

    name = "orpo"

    def __init__(self, pairs: list[Pair], *, beta: float = 0.1, batch_size: int = 4, seed: int = 0,
                 device: torch.device | str = "cpu"):
        self.pairs, self.beta, self.batch_size, self.device = pairs, beta, batch_size, device
        self.cursor = Cursor(len(pairs), seed)

    def batches(self, model: torch.nn.Module | None = None) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            yield pair_batch([self.pairs[i] for i in self.cursor.take(self.batch_size)], self.device)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        logp, count = sequence_logprobs(model, batch["tokens"], batch["response"])
        mean_logp = logp / count.clamp(min=1)
        n = mean_logp.shape[0] // 2
        return orpo_loss(mean_logp[:n], mean_logp[n:], self.beta)

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
