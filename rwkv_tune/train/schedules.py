"""Learning-rate schedules: cos_decay, wsd (warmup-stable-decay that really ends at lr_final), constant.

Warmup (linear from ~0 to lr_init over warmup_steps) applies to every schedule.
"""

from __future__ import annotations

import math

WSD_DECAY_FRACTION = 0.2  # wsd decays over the last 20% of the steps after warmup


def learning_rate(step: int, *, total_steps: int, lr_init: float, lr_final: float, schedule: str,
                  warmup_steps: int = 0) -> float:
    """The learning rate for optimizer step `step` (0-based) of `total_steps`."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr_init * (step + 1) / warmup_steps
    if schedule == "constant" or total_steps <= warmup_steps + 1:
        return lr_init
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps - 1))
    if schedule == "cos_decay":
        return lr_final + 0.5 * (lr_init - lr_final) * (1 + math.cos(math.pi * progress))
    if schedule == "wsd":
        decay_start = 1.0 - WSD_DECAY_FRACTION
        if progress <= decay_start:
            return lr_init
        return lr_init + (lr_final - lr_init) * (progress - decay_start) / WSD_DECAY_FRACTION
    raise ValueError(f"unknown lr schedule {schedule!r}")
