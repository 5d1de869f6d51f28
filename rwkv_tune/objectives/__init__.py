"""Preference and RL fine-tuning objectives: DPO, ORPO and GRPO beside the trainer's next-token SFT.

torch-free at import: `ObjectiveConfig` (config.py) is what the preset, wizard and estimator read.
The torch parts load on use: logprobs, reference (the base = adapter off), dpo, orpo, rollout,
rewards, grpo, pairs (data), rollout_log, factory (`build_objective`), driver (a small loop).
"""

from __future__ import annotations

from rwkv_tune.objectives.config import BUILTIN_REWARDS, OBJECTIVES, ObjectiveConfig, RewardSpec

__all__ = ["BUILTIN_REWARDS", "OBJECTIVES", "ObjectiveConfig", "RewardSpec"]
