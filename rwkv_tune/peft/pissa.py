"""PiSSA: LoRA initialised from the top-r singular vectors of W, with the frozen weight W − B₀A₀.

Init: U, S, V = svd_lowrank(W, r, niter); A₀ = √S·Vᵀ [r, in], B₀ = U·√S [out, r]; no alpha, no
dropout. The init (A₀, B₀) is saved in the adapter as `….init_lora_A/B` (fp32), so merge
(W′ = W − B₀A₀ + B A) and resume never depend on re-running the randomized SVD. The SVD is seeded,
so the same W on the same device gives the same init.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from rwkv_tune.errors import ConfigError
from rwkv_tune.peft.base import AdaptedLinear, Method, Quantizer
from rwkv_tune.peft.config import PeftConfig
from rwkv_tune.peft.lora import LoRALinear, check_rank


def pissa_init(w: torch.Tensor, r: int, niter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A₀ [r, in], B₀ [out, r]) in fp32 from a seeded randomized SVD of w."""
    devices = [w.device.index or 0] if w.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(0)
        u, s, v = torch.svd_lowrank(w.detach().float(), q=r, niter=niter)
    root = s.sqrt()
    return root[:, None] * v.T, u * root[None, :]


class PissaLinear(LoRALinear):
    """LoRA with scale 1 whose frozen weight is the residual W − B₀A₀."""

    suffixes = ("lora_A", "lora_B", "init_lora_A", "init_lora_B")

    def __init__(self, linear: nn.Linear, r: int, niter: int, init: dict[str, torch.Tensor] | None = None):
        super().__init__(linear, r, 1.0, 0.0)
        w = self.weight
        if init and "init_lora_A" in init and "init_lora_B" in init:
            a0 = init["init_lora_A"].to(device=w.device, dtype=torch.float32)
            b0 = init["init_lora_B"].to(device=w.device, dtype=torch.float32)
        else:
            a0, b0 = pissa_init(w, r, niter)
        self.register_buffer("init_lora_A", a0, persistent=False)
        self.register_buffer("init_lora_B", b0, persistent=False)
        with torch.no_grad():
            self.lora_A.copy_(a0)
            self.lora_B.copy_(b0)
        self.weight = nn.Parameter((w.float() - b0 @ a0).to(w.dtype), requires_grad=False)


class PiSSA(Method):
    name = "pissa"
    suffixes = PissaLinear.suffixes

    def check(self, cfg: PeftConfig, module: str, out_features: int, in_features: int) -> None:
        check_rank(cfg, module, out_features, in_features)

    def wrap(self, linear: nn.Linear, cfg: PeftConfig, init: dict[str, torch.Tensor]) -> AdaptedLinear:
        return PissaLinear(linear, cfg.r, cfg.svd_niter, init)

    def count(self, cfg: PeftConfig, out_features: int, in_features: int) -> int:
        return cfg.r * (in_features + out_features)

    def expected_shapes(self, cfg: PeftConfig, out_features: int, in_features: int) -> dict[str, tuple[int, ...]]:
        return {"lora_A": (cfg.r, in_features), "lora_B": (out_features, cfg.r),
                "init_lora_A": (cfg.r, in_features), "init_lora_B": (out_features, cfg.r)}

    def merge_weight(self, w: torch.Tensor, parts: dict[str, torch.Tensor], cfg: PeftConfig,
                     q: Quantizer) -> torch.Tensor:
        return q(w - parts["init_lora_B"] @ parts["init_lora_A"]) + parts["lora_B"] @ parts["lora_A"]

    @torch.no_grad()
    def reinit(self, model: nn.Module, modules: tuple[str, ...], tensors: dict[str, torch.Tensor]) -> None:
        """On an already-prepared model (resume), make the frozen residual use the saved init."""
        for name in modules:
            layer: PissaLinear = model.get_submodule(name)
            a0 = tensors[f"{name}.init_lora_A"].to(layer.init_lora_A)
            b0 = tensors[f"{name}.init_lora_B"].to(layer.init_lora_B)
            if torch.equal(a0, layer.init_lora_A) and torch.equal(b0, layer.init_lora_B):
                continue
            if layer.qweight is not None:
                raise ConfigError(f"the saved PiSSA init of {name} differs from this run's, and its base is quantized",
                                  "Resume QPiSSA with peft.load_adapter() on a freshly loaded (unprepared) base model.")
            w = layer.weight.float() + layer.init_lora_B @ layer.init_lora_A - b0 @ a0
            layer.weight = nn.Parameter(w.to(layer.weight.dtype), requires_grad=False)
            layer.init_lora_A, layer.init_lora_B = a0, b0
