"""Full fine-tuning: every parameter trains; its "adapter" is the whole model."""

from __future__ import annotations

import torch.nn as nn

from rwkv_tune.peft.base import Method
from rwkv_tune.peft.config import PeftConfig


class Full(Method):
    name = "full"

    def prepare(self, model: nn.Module, cfg: PeftConfig, layers: tuple[int, ...]) -> None:
        model.requires_grad_(True)
