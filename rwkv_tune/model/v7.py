"""RWKV-7 "Goose" (x070): time-mix with the generalized delta rule, and a squared-ReLU channel-mix."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from rwkv_tune.model.common import LN_X_EPS, vector
from rwkv_tune.model.wkv import wkv7
from rwkv_tune.spec import ModelSpec


class TimeMix(nn.Module):
    def __init__(self, spec: ModelSpec, layer_id: int):
        super().__init__()
        C, H, N = spec.n_embd, spec.n_head, spec.head_size
        d = spec.lora_dims
        self.layer_id, self.n_head, self.head_size = layer_id, H, N
        self.op = "torch"
        self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g = (vector(C) for _ in range(6))
        self.w0 = vector(C)
        self.w1 = nn.Parameter(torch.zeros(C, d["w"]))
        self.w2 = nn.Parameter(torch.zeros(d["w"], C))
        self.a0 = vector(C)
        self.a1 = nn.Parameter(torch.zeros(C, d["a"]))
        self.a2 = nn.Parameter(torch.zeros(d["a"], C))
        if layer_id > 0 or spec.layer0_v:  # layer 0 never uses them; released files may omit them
            self.v0 = vector(C)
            self.v1 = nn.Parameter(torch.zeros(C, d["v"]))
            self.v2 = nn.Parameter(torch.zeros(d["v"], C))
        self.g1 = nn.Parameter(torch.zeros(C, d["g"]))
        self.g2 = nn.Parameter(torch.zeros(d["g"], C))
        self.k_k = vector(C)
        self.k_a = vector(C)
        self.r_k = nn.Parameter(torch.zeros(H, N))
        self.register_parameter("time_state", nn.Parameter(torch.zeros(H, N, N)) if spec.time_state else None)
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        self.ln_x = nn.GroupNorm(H, C, eps=LN_X_EPS)

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor, v_first: torch.Tensor | None,
                state: torch.Tensor | None):
        B, T, C = x.shape
        H, N = self.n_head, self.head_size
        xx = x_prev - x
        xr, xw, xk = x + xx * self.x_r, x + xx * self.x_w, x + xx * self.x_k
        xv, xa, xg = x + xx * self.x_v, x + xx * self.x_a, x + xx * self.x_g

        r = self.receptance(xr)
        w = -F.softplus(-(self.w0 + torch.tanh(xw @ self.w1) @ self.w2)) - 0.5  # soft clamp to (-inf, -0.5)
        k = self.key(xk)
        v = self.value(xv)
        if self.layer_id == 0:
            v_first = v
        else:
            v = v + (v_first - v) * torch.sigmoid(self.v0 + (xv @ self.v1) @ self.v2)
        a = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)
        g = torch.sigmoid(xg @ self.g1) @ self.g2

        kk = F.normalize((k * self.k_k).view(B, T, H, N), dim=-1, p=2.0, eps=1e-12)
        k = k * (1 + (a - 1) * self.k_a)
        log_decay = -torch.exp(w.float())
        if state is None and self.time_state is not None:
            state = self.time_state
        y, state = wkv7(r.view(B, T, H, N), log_decay.view(B, T, H, N), k.view(B, T, H, N), v.view(B, T, H, N),
                        -kk, kk * a.view(B, T, H, N), state, op=self.op)

        y = self.ln_x(y.reshape(B * T, C)).view(B, T, C)
        bonus = (r.view(B, T, H, N) * k.view(B, T, H, N) * self.r_k).sum(dim=-1, keepdim=True) * v.view(B, T, H, N)
        y = y + bonus.view(B, T, C)
        return self.output(y * g), v_first, state


class ChannelMix(nn.Module):
    def __init__(self, spec: ModelSpec, layer_id: int):
        super().__init__()
        C, F_ = spec.n_embd, spec.dim_ffn
        self.x_k = vector(C)
        self.key = nn.Linear(C, F_, bias=False)
        self.value = nn.Linear(F_, C, bias=False)

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor) -> torch.Tensor:
        k = x + (x_prev - x) * self.x_k
        return self.value(torch.relu(self.key(k)) ** 2)
