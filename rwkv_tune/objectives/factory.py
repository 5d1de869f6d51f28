"""Build the objective a config names, on a model that has its PEFT method applied (and nothing loaded yet).

The reference policy snapshots the trainable tensors' starting values, so build the objective
BEFORE loading a checkpoint's adapter on resume (the loop's order: apply → build → restore).
"""

from __future__ import annotations

from pathlib import Path

import torch

from rwkv_tune.errors import ConfigError
from rwkv_tune.objectives.base import Objective
from rwkv_tune.objectives.config import ObjectiveConfig
from rwkv_tune.objectives.pairs import Pair, Prompt, read_objective_data
from rwkv_tune.objectives.reference import ReferencePolicy
from rwkv_tune.objectives.rollout_log import ROLLOUTS_FILE, RolloutWriter


def build_objective(cfg: ObjectiveConfig, model: torch.nn.Module, data: str | Path | list[Pair] | list[Prompt], *,
                    data_type: str = "auto", batch_size: int = 4, seed: int = 0,
                    device: torch.device | str = "cpu", run_dir: str | Path | None = None,
                    search_path: str | Path | None = None) -> Objective:
    """A DPO, ORPO or GRPO objective over `data` (a jsonl path or tokenised items); rollouts go to run_dir."""
    if cfg.type == "sft":
        raise ConfigError("objective.type = sft is the trainer's own next-token loss, not built here",
                          "Call build_objective only for dpo, orpo or grpo.")
    cfg.check_data_type(data_type)
    if isinstance(data, (str, Path)):
        _, items = read_objective_data(data, data_type, vocab_size=model.spec.vocab_size)
    else:
        items = data
    wanted = Prompt if cfg.type == "grpo" else Pair
    if not items or not isinstance(items[0], wanted):
        raise ConfigError(f"objective.type = {cfg.type} needs {'prompts' if wanted is Prompt else 'pairs'} data, "
                          f"got {type(items[0]).__name__.lower() + 's' if items else 'no records'}",
                          "Use a {prompt, chosen, rejected} file for dpo/orpo, a {prompt, answer} file for grpo.")
    if cfg.type == "orpo":
        from rwkv_tune.objectives.orpo import ORPO

        return ORPO(items, beta=cfg.beta, batch_size=batch_size, seed=seed, device=device)
    reference = ReferencePolicy(model)
    if cfg.type == "dpo":
        from rwkv_tune.objectives.dpo import DPO

        return DPO(items, reference, beta=cfg.beta, batch_size=batch_size, seed=seed, device=device)
    from rwkv_tune.objectives.grpo import GRPO
    from rwkv_tune.objectives.rewards import build_rewards

    return GRPO(items, reference, build_rewards(cfg.rewards, search_path), group_size=cfg.group_size,
                max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                kl_beta=cfg.kl_beta, clip_eps=cfg.clip_eps, seed=seed, device=device,
                rollouts=RolloutWriter(Path(run_dir) / ROLLOUTS_FILE) if run_dir is not None else None)
