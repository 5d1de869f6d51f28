"""GRPO (Shao et al. 2024, DeepSeekMath): sampled groups, group-normalised advantages, a clipped objective, KL.

Per prompt, G completions are sampled from the policy (`rollout.sample_group`) and scored by the
rewards; advantage A_i = (r_i − mean(r)) / (std(r) + 1e-4) within the group. Per response token:

    ρ = π(o_t) / π_old(o_t);   ℓ_t = −min(ρ·A, clip(ρ, 1 − ε, 1 + ε)·A) + β_KL·k3
    k3 = π_ref/π − log(π_ref/π) − 1       (the unbiased, non-negative KL estimator, as DeepSeekMath and TRL)
and the loss is the mean over the group of each completion's mean ℓ_t. One policy update per group,
so π_old is π detached (ρ = 1 in value, its gradient is the policy gradient); the clip fraction counts
tokens where the clip was active. The reference is the base with the adapter off.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from rwkv_tune.data.tokenizer import EOD, get_tokenizer
from rwkv_tune.objectives.base import Cursor
from rwkv_tune.objectives.logprobs import token_logprobs
from rwkv_tune.objectives.pairs import Prompt, pad_rows
from rwkv_tune.objectives.reference import ReferencePolicy, reference_logprobs
from rwkv_tune.objectives.rewards import Reward, score
from rwkv_tune.objectives.rollout import sample_group
from rwkv_tune.objectives.rollout_log import RolloutWriter


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """(r − mean) / (std + eps) within one group [G] (std: sample std, as TRL); all-equal rewards → 0."""
    return (rewards - rewards.mean()) / (rewards.std() + eps)


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None, advantages: torch.Tensor,
              mask: torch.Tensor, *, clip_eps: float, kl_beta: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped GRPO loss from per-token log-probs [G, T] and advantages [G]; and its event fields."""
    mask = mask.to(logp.dtype)
    counts = mask.sum(-1).clamp(min=1)
    ratio = torch.exp(logp - old_logp)
    adv = advantages.unsqueeze(-1)
    unclipped, clipped = ratio * adv, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv
    per_token = -torch.min(unclipped, clipped)
    fields: dict[str, float] = {}
    if ref_logp is not None and kl_beta > 0:
        delta = ref_logp - logp
        kl = torch.exp(delta) - delta - 1
        per_token = per_token + kl_beta * kl
        fields["kl"] = float(((kl.detach() * mask).sum(-1) / counts).mean())
    loss = ((per_token * mask).sum(-1) / counts).mean()
    ratio = ratio.detach()
    was_clipped = ((ratio < 1 - clip_eps) & (adv < 0)) | ((ratio > 1 + clip_eps) & (adv > 0))
    fields["clip_fraction"] = float((was_clipped.to(mask.dtype) * mask).sum() / mask.sum().clamp(min=1))
    return loss, fields


class GRPO:
    """Group relative policy optimisation on prompts, with rewards from functions of the completions."""

    name = "grpo"

    def __init__(self, prompts: list[Prompt], reference: ReferencePolicy, rewards: list[Reward], *,
                 group_size: int = 8, max_new_tokens: int = 256, temperature: float = 1.0, top_p: float = 1.0,
                 kl_beta: float = 0.04, clip_eps: float = 0.2, seed: int = 0, device: torch.device | str = "cpu",
                 rollouts: RolloutWriter | None = None):
        self.prompts, self.reference, self.rewards = prompts, reference, rewards
        self.group_size, self.max_new_tokens = group_size, max_new_tokens
        self.temperature, self.top_p, self.kl_beta, self.clip_eps = temperature, top_p, kl_beta, clip_eps
        self.device, self.rollouts = device, rollouts
        self.cursor = Cursor(len(prompts), seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.groups = 0

    def sample(self, model: torch.nn.Module) -> dict[str, Any]:
        """Sample and score the next prompt's group; write its rollouts line; the batch for `loss`."""
        prompt = self.prompts[self.cursor.take(1)[0]]
        group = sample_group(model, prompt.ids, self.group_size, max_new_tokens=self.max_new_tokens,
                             temperature=self.temperature, top_p=self.top_p, generator=self.generator)
        tok = get_tokenizer()
        texts = [tok.decode([t for t in c if t != EOD]) for c in group.completions]
        totals, terms = score(self.rewards, prompt.text, texts, prompt.record, where=f"prompt record {prompt.index}")
        rewards = torch.tensor(totals, dtype=torch.float32)
        advantages = group_advantages(rewards)
        tokens, response = pad_rows([(group.prompt, tuple(c)) for c in group.completions], self.device)
        self.groups += 1
        if self.rollouts is not None:
            self.rollouts.write(group=self.groups, index=prompt.index, prompt=prompt.text, completions=texts,
                                rewards=totals, terms=terms, advantages=[round(float(a), 6) for a in advantages])
        fields = {"reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()),
                  "completion_length": sum(len(c) for c in group.completions) / len(group.completions)}
        for label, values in terms.items():
            t = torch.tensor(values)
            fields[f"reward/{label}/mean"], fields[f"reward/{label}/std"] = float(t.mean()), float(t.std())
        return {"tokens": tokens, "response": response, "advantages": advantages.to(self.device), "fields": fields}

    def batches(self, model: torch.nn.Module) -> Iterator[dict[str, Any]]:
        while True:
            yield self.sample(model)

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        tokens, response = batch["tokens"], batch["response"]
        ref = reference_logprobs(self.reference, tokens, response, per_token=True) if self.kl_beta > 0 else None
        logp = token_logprobs(model, tokens, response)
        loss, fields = grpo_loss(logp, logp.detach(), ref, batch["advantages"], response[:, 1:],
                                 clip_eps=self.clip_eps, kl_beta=self.kl_beta)
        return loss, {**batch["fields"], **fields}

    def state_dict(self) -> dict[str, Any]:
        return {"cursor": self.cursor.state_dict(), "generator": self.generator.get_state(), "groups": self.groups}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cursor.load_state_dict(state["cursor"])
        self.generator.set_state(state["generator"])
        self.groups = int(state["groups"])
