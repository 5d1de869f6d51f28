"""Rough training speed and run time: FLOPs per token over a GPU's achievable tensor throughput.

This is a rough estimate (within a factor of ~2): it assumes the matmuls dominate, ignores
data loading and the optimizer step, and uses one achieved-utilisation figure for every card
(`calibration.MFU`). Forward costs 2 FLOPs per weight per token; the backward pass costs 2 more
for the activation gradients (needed through the frozen base too) and 2 more for weight
gradients of trained weights, so a frozen base costs ~4N and a trained one ~6N per token.
"""

from __future__ import annotations

from dataclasses import dataclass

from rwkv_tune.estimate import calibration as cal
from rwkv_tune.estimate.config import Config
from rwkv_tune.estimate.gpus import GPU
from rwkv_tune.estimate.vram import Params
from rwkv_tune.spec import ModelSpec


@dataclass(frozen=True)
class Timing:
    """Tokens per second on `gpu` (all devices together) and the run time for `tokens`."""

    gpu: str | None
    flops_per_token: float
    tokens_per_s: float | None
    tokens: int | None
    time_s: float | None

    def to_dict(self) -> dict[str, object]:
        return {"gpu": self.gpu, "flops_per_token": self.flops_per_token, "tokens_per_s": self.tokens_per_s,
                "tokens": self.tokens, "time_s": self.time_s, "rough": True}


def flops_per_token(spec: ModelSpec, cfg: Config, p: Params) -> float:
    """Training FLOPs per token: forward, backward (activation + weight grads) and grad_cp recompute."""
    wkv = (8 if spec.version == 7 else 6) * spec.n_embd * spec.head_size * spec.n_layer
    adapter = 0 if cfg.method == "state" or (cfg.method == "miss" and cfg.mode == "bat") else 2 * p.adapter
    forward = 2 * p.matmul_params + wkv + adapter
    backward = 2 * p.matmul_params + 2 * wkv + 2 * adapter + 2 * p.matmul_trainable
    head = spec.vocab_size * spec.n_embd
    recompute = 2 * (p.matmul_params - head) + wkv + adapter if cfg.grad_cp else 0
    return float(forward + backward + recompute)


def tokens_per_s(flops: float, cfg: Config, gpu: GPU | None) -> float | None:
    """Achievable tokens/s on `cfg.devices` copies of `gpu`; None when the card's speed is unknown."""
    if gpu is None or not gpu.bf16_tflops:
        return None
    rate = gpu.bf16_tflops * 1e12 * cal.MFU * cal.QUANT_SPEED[cfg.quant] * cal.PRECISION_SPEED[cfg.precision]
    if cfg.offload:
        rate *= cal.OFFLOAD_SPEED
    return rate * cfg.devices / flops


def timing(spec: ModelSpec, cfg: Config, p: Params, gpu: GPU | None, tokens: int | None) -> Timing:
    """Speed and run time of `tokens` training tokens (None: speed only)."""
    flops = flops_per_token(spec, cfg, p)
    tps = tokens_per_s(flops, cfg, gpu)
    time_s = tokens / tps if tps and tokens else None
    return Timing(gpu.name if gpu else None, flops, tps, tokens, time_s)
