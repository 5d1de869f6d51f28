"""ORPO (Hong et al. 2024): reference-free; NLL of the chosen response plus β times an odds-ratio penalty.

    L = −mean(log P(y_w)) − β·log σ(log odds(y_w) − log odds(y_l)),  odds(y) = P(y) / (1 − P(y))
with P(y) the length-normalised probability exp(mean log-prob of the response tokens), as published
(and as TRL computes it); the NLL term is the per-pair mean token NLL of the chosen response.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rwkv_tune.objectives.logprobs import sequence_logprobs
from rwkv_tune.objectives.pair_objective import PairObjective


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


class ORPO(PairObjective):
    """Odds-ratio preference optimisation: SFT on chosen and a preference penalty in one loss, no reference."""

    name = "orpo"

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        logp, count = sequence_logprobs(model, batch["tokens"], batch["response"])
        mean_logp = logp / count.clamp(min=1)
        n = mean_logp.shape[0] // 2
        return orpo_loss(mean_logp[:n], mean_logp[n:], self.beta)
