"""RWKV-5.2 "Eagle" (x052): multi-head linear attention with a static per-channel decay."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from rwkv_tune.model.common import LN_X_EPS, vector
from rwkv_tune.model.wkv import wkv6
from rwkv_tune.spec import ModelSpec


def lerp_v5(x: torch.Tensor, x_prev: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """v5's convention weights x, not the delta: x*mix + x_prev*(1-mix)."""
    return x * mix + x_prev * (1 - mix)


class TimeMix(nn.Module):
    def __init__(self, spec: ModelSpec, layer_id: int):
        super().__init__()
        C, H, N = spec.n_embd, spec.n_head, spec.head_size
        self.layer_id, self.n_head, self.head_size = layer_id, H, N
        self.op = "torch"
        self.time_mix_k, self.time_mix_v, self.time_mix_r, self.time_mix_g = (vector(C) for _ in range(4))
        self.time_decay = nn.Parameter(torch.zeros(H, N))
        self.time_faaaa = nn.Parameter(torch.zeros(H, N))
        self.register_parameter("time_state", nn.Parameter(torch.zeros(H, N, N)) if spec.time_state else None)
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        self.gate = nn.Linear(C, C, bias=False)
        self.ln_x = nn.GroupNorm(H, C, eps=LN_X_EPS)

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor, v_first: torch.Tensor | None,
                state: torch.Tensor | None):
        B, T, C = x.shape
        H, N = self.n_head, self.head_size
        r = self.receptance(lerp_v5(x, x_prev, self.time_mix_r))
        k = self.key(lerp_v5(x, x_prev, self.time_mix_k))
        v = self.value(lerp_v5(x, x_prev, self.time_mix_v))
        g = F.silu(self.gate(lerp_v5(x, x_prev, self.time_mix_g)))
        log_decay = (-torch.exp(self.time_decay.float())).expand(B, T, H, N)
        if state is None and self.time_state is not None:
            state = self.time_state.transpose(-1, -2)
        y, state = wkv6(r.view(B, T, H, N), log_decay, k.view(B, T, H, N), v.view(B, T, H, N),
                        self.time_faaaa, state, op=self.op)
        y = self.ln_x(y.reshape(B * T, C)).view(B, T, C)
        return self.output(y * g), v_first, state


class ChannelMix(nn.Module):
    def __init__(self, spec: ModelSpec, layer_id: int):
        super().__init__()
        C, F_ = spec.n_embd, spec.dim_ffn
        self.time_mix_k = vector(C)
        self.time_mix_r = vector(C)
        self.key = nn.Linear(C, F_, bias=False)
        self.receptance = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(F_, C, bias=False)

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor) -> torch.Tensor:
        k = lerp_v5(x, x_prev, self.time_mix_k)
        r = lerp_v5(x, x_prev, self.time_mix_r)
        return torch.sigmoid(self.receptance(r)) * self.value(torch.relu(self.key(k)) ** 2)
