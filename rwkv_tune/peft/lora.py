"""LoRA: y = x Wᵀ + s·B(A·drop(x)), A Kaiming-uniform, B = 0, s = alpha/r (alpha/√r with rsLoRA).

Merge: W′ = W + s·B A. alpha is part of the adapter's metadata, so a merge cannot use the wrong one.
DoRA (read from Hugging Face peft folders, `extra: {dora: true}`): a magnitude m [out] rescales each
output row, W′ = m ⊙ (W + s·B A) / ‖W + s·B A‖ (row norms), as peft's merge does.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from rwkv_tune.errors import ConfigError
from rwkv_tune.peft.base import AdaptedLinear, Method, Quantizer
from rwkv_tune.peft.config import PeftConfig


def dora_weight(w: torch.Tensor, delta: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """DoRA's merged weight: each output row of W + ΔW rescaled to the magnitude m."""
    merged = w + delta
    return (magnitude / torch.linalg.norm(merged, dim=1)).unsqueeze(1) * merged


class LoRALinear(AdaptedLinear):
    """A frozen Linear plus B·A, with A [r, in] and B [out, r] (and DoRA's magnitude [out] if asked)."""

    suffixes = ("lora_A", "lora_B")

    def __init__(self, linear: nn.Linear, r: int, scale: float, dropout: float = 0.0, dora: bool = False):
        super().__init__(linear)
        w = self.weight
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, dtype=w.dtype, device=w.device))
        self.scale = scale
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if dora:  # starts at W's own row norms: no change until trained
            self.lora_magnitude = nn.Parameter(torch.linalg.norm(self.frozen_weight(torch.float32), dim=1).to(w.dtype))
            self.suffixes = ("lora_A", "lora_B", "lora_magnitude")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if "lora_magnitude" not in self.suffixes:
            return super().forward(x)
        w = self.frozen_weight(torch.float32)
        delta = self.scale * (self.lora_B.float() @ self.lora_A.float())
        return F.linear(x, dora_weight(w, delta, self.lora_magnitude.float()).to(x.dtype))

    def delta_out(self, x: torch.Tensor) -> torch.Tensor:
        # params may be fp32 masters under a bf16 model: compute in the activations' dtype
        h = F.linear(self.dropout(x), self.lora_A.to(x.dtype))
        return F.linear(h, self.lora_B.to(x.dtype)) * self.scale


def check_rank(cfg: PeftConfig, module: str, out_features: int, in_features: int) -> None:
    """r must not exceed the smaller side of the Linear (a rank beyond it adds nothing)."""
    if cfg.r > min(out_features, in_features):
        raise ConfigError(f"method.r = {cfg.r} is larger than {module} allows ([out, in] = [{out_features}, "
                          f"{in_features}])", f"Use r ≤ {min(out_features, in_features)}.")


class LoRA(Method):
    name = "lora"
    suffixes = ("lora_A", "lora_B", "lora_magnitude")

    def check(self, cfg: PeftConfig, module: str, out_features: int, in_features: int) -> None:
        check_rank(cfg, module, out_features, in_features)

    def wrap(self, linear: nn.Linear, cfg: PeftConfig, init: dict[str, torch.Tensor]) -> AdaptedLinear:
        return LoRALinear(linear, cfg.r, cfg.scale, cfg.dropout, dora=bool(cfg.extra.get("dora")))

    def count(self, cfg: PeftConfig, out_features: int, in_features: int) -> int:
        return cfg.r * (in_features + out_features) + (out_features if cfg.extra.get("dora") else 0)

    def expected_shapes(self, cfg: PeftConfig, out_features: int, in_features: int) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {"lora_A": (cfg.r, in_features), "lora_B": (out_features, cfg.r)}
        if cfg.extra.get("dora"):
            shapes["lora_magnitude"] = (out_features,)
        return shapes

    def merge_weight(self, w: torch.Tensor, parts: dict[str, torch.Tensor], cfg: PeftConfig,
                     q: Quantizer) -> torch.Tensor:
        delta = cfg.scale * (parts["lora_B"] @ parts["lora_A"])
        if "lora_magnitude" in parts:
            return dora_weight(q(w), delta, parts["lora_magnitude"])
        return q(w) + delta
