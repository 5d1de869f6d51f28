"""RWKV-6 "Finch" (x060): data-dependent token shift (ddlerp) and data-dependent decay."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from rwkv_tune.model.common import LN_X_EPS, vector
from rwkv_tune.model.wkv import wkv6
from rwkv_tune.spec import ModelSpec


class TimeMix(nn.Module):
    def __init__(self, spec: ModelSpec, layer_id: int):
        super().__init__()
        C, H, N = spec.n_embd, spec.n_head, spec.head_size
        Dm, Dd = spec.lora_dims["maa"], spec.lora_dims["decay"]
        self.layer_id, self.n_head, self.head_size = layer_id, H, N
        self.op = "torch"
        self.time_maa_x, self.time_maa_w, self.time_maa_k = vector(C), vector(C), vector(C)
        self.time_maa_v, self.time_maa_r, self.time_maa_g = vector(C), vector(C), vector(C)
        self.time_maa_w1 = nn.Parameter(torch.zeros(C, 5 * Dm))
        self.time_maa_w2 = nn.Parameter(torch.zeros(5, Dm, C))
        self.time_decay = vector(C)
        self.time_decay_w1 = nn.Parameter(torch.zeros(C, Dd))
        self.time_decay_w2 = nn.Parameter(torch.zeros(Dd, C))
        self.time_faaaa = nn.Parameter(torch.zeros(H, N))
        # RWKV-PEFT's time_state is [H, value, key]; the op wants [key, value] (transposed at use).
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
        xx = x_prev - x
        xxx = x + xx * self.time_maa_x
        m = torch.tanh(xxx @ self.time_maa_w1).view(B * T, 5, -1).transpose(0, 1)
        mw, mk, mv, mr, mg = torch.bmm(m, self.time_maa_w2).view(5, B, T, C)
        xw = x + xx * (self.time_maa_w + mw)
        xk = x + xx * (self.time_maa_k + mk)
        xv = x + xx * (self.time_maa_v + mv)
        xr = x + xx * (self.time_maa_r + mr)
        xg = x + xx * (self.time_maa_g + mg)

        r, k, v = self.receptance(xr), self.key(xk), self.value(xv)
        g = F.silu(self.gate(xg))
        w = self.time_decay + torch.tanh(xw @ self.time_decay_w1) @ self.time_decay_w2
        log_decay = -torch.exp(w.float())
        if state is None and self.time_state is not None:
            state = self.time_state.transpose(-1, -2)
        y, state = wkv6(r.view(B, T, H, N), log_decay.view(B, T, H, N), k.view(B, T, H, N), v.view(B, T, H, N),
                        self.time_faaaa, state, op=self.op)
        y = self.ln_x(y.reshape(B * T, C)).view(B, T, C)
        return self.output(y * g), v_first, state


class ChannelMix(nn.Module):
    def __init__(self, spec: ModelSpec, layer_id: int):
        super().__init__()
        C, F_ = spec.n_embd, spec.dim_ffn
        self.time_maa_k = vector(C)
        self.time_maa_r = vector(C)
        self.key = nn.Linear(C, F_, bias=False)
        self.receptance = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(F_, C, bias=False)

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor) -> torch.Tensor:
        xx = x_prev - x
        k = x + xx * self.time_maa_k
        r = x + xx * self.time_maa_r
        return torch.sigmoid(self.receptance(r)) * self.value(torch.relu(self.key(k)) ** 2)
