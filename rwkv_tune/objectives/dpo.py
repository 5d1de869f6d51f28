"""DPO (Rafailov et al. 2023), sigmoid loss: −log σ(β·[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))]).

Log-probs are sums over the response tokens (the prompt is masked); the reference is the base model
with the adapter off (`reference.ReferencePolicy`). Events: implicit rewards β·(log π − log π_ref) of
chosen and rejected, their margin, and the preference accuracy (margin > 0) of the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rwkv_tune.objectives.logprobs import sequence_logprobs
from rwkv_tune.objectives.pair_objective import PairObjective
from rwkv_tune.objectives.pairs import Pair
from rwkv_tune.objectives.reference import ReferencePolicy, reference_logprobs


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean sigmoid DPO loss over pairs from sequence log-probs [B]; and its event fields."""
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    margin = chosen_reward - rejected_reward
    loss = -F.logsigmoid(margin).mean()
    chosen_reward, rejected_reward, margin = chosen_reward.detach(), rejected_reward.detach(), margin.detach()
    return loss, {"reward_chosen": float(chosen_reward.mean()), "reward_rejected": float(rejected_reward.mean()),
                  "reward_margin": float(margin.mean()), "pref_accuracy": float((margin > 0).float().mean())}


class DPO(PairObjective):
    """Direct preference optimisation on (prompt, chosen, rejected) pairs."""

    name = "dpo"

    def __init__(self, pairs: list[Pair], reference: ReferencePolicy, *, beta: float = 0.1, batch_size: int = 4,
                 seed: int = 0, device: torch.device | str = "cpu"):
        super().__init__(pairs, beta=beta, batch_size=batch_size, seed=seed, device=device)
        self.reference = reference

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        tokens, response = batch["tokens"], batch["response"]
        ref = reference_logprobs(self.reference, tokens, response)  # before the policy forward: no swap under a graph
        logp, _ = sequence_logprobs(model, tokens, response)
        n = tokens.shape[0] // 2
        loss, fields = dpo_loss(logp[:n], logp[n:], ref[:n], ref[n:], self.beta)
        fields.update(logp_chosen=float(logp[:n].detach().mean()), logp_rejected=float(logp[n:].detach().mean()))
        return loss, fields
