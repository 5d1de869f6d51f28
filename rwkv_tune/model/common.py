"""The parts every RWKV version shares: the language model skeleton, blocks, token shift, state.

A version module (v5.py, v6.py, v7.py) provides `TimeMix` and `ChannelMix`; everything else lives
here. Parameter names are the official ones, so `state_dict()` is an official RWKV file.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from rwkv_tune.spec import ModelSpec

LN_EPS = 1e-5
LN_X_EPS = 64e-5  # ln_x GroupNorm: 1e-5 * head_size_divisor(8)**2


@dataclass
class State:
    """The recurrent state of every layer, batched: what carries a sequence across calls.

    att_shift / ffn_shift: [L, B, C] last normed input of each sub-block (token shift);
    wkv: [L, B, H, N, N] fp32 (v7: [value, key]; v5/v6: [key, value]).
    """

    att_shift: torch.Tensor
    wkv: torch.Tensor
    ffn_shift: torch.Tensor

    def detach(self) -> State:
        return State(self.att_shift.detach(), self.wkv.detach(), self.ffn_shift.detach())

    @staticmethod
    def zeros(spec: ModelSpec, batch: int, *, dtype: torch.dtype, device: torch.device | str) -> State:
        L, C, H, N = spec.n_layer, spec.n_embd, spec.n_head, spec.head_size
        return State(
            torch.zeros(L, batch, C, dtype=dtype, device=device),
            torch.zeros(L, batch, H, N, N, dtype=torch.float32, device=device),
            torch.zeros(L, batch, C, dtype=dtype, device=device),
        )


def token_shift(x: torch.Tensor, last: torch.Tensor | None) -> torch.Tensor:
    """x_prev[t] = x[t-1]; x_prev[0] = the carried `last` [B, C] (zeros when None)."""
    if last is None:
        return F.pad(x, (0, 0, 1, -1))
    return torch.cat([last.unsqueeze(1).to(x.dtype), x[:, :-1]], dim=1)


def vector(n_embd: int) -> nn.Parameter:
    """A [1, 1, C] parameter (lerp coefficients, biases), the official shape."""
    return nn.Parameter(torch.zeros(1, 1, n_embd))


class Block(nn.Module):
    def __init__(self, spec: ModelSpec, layer_id: int, time_mix: type[nn.Module], channel_mix: type[nn.Module]):
        super().__init__()
        C = spec.n_embd
        self.layer_id = layer_id
        self.ln1 = nn.LayerNorm(C, eps=LN_EPS)
        self.ln2 = nn.LayerNorm(C, eps=LN_EPS)
        if layer_id == 0:
            self.ln0 = nn.LayerNorm(C, eps=LN_EPS)
        self.att = time_mix(spec, layer_id)
        self.ffn = channel_mix(spec, layer_id)

    def forward(self, x: torch.Tensor, v_first: torch.Tensor | None, att_shift: torch.Tensor | None,
                wkv_state: torch.Tensor | None, ffn_shift: torch.Tensor | None):
        if self.layer_id == 0:
            x = self.ln0(x)
        xa = self.ln1(x)
        att_out, v_first, wkv_state = self.att(xa, token_shift(xa, att_shift), v_first, wkv_state)
        x = x + att_out
        xf = self.ln2(x)
        x = x + self.ffn(xf, token_shift(xf, ffn_shift))
        return x, v_first, xa[:, -1], wkv_state, xf[:, -1]


class RWKV(nn.Module):
    """An RWKV language model: emb → blocks → ln_out → head, with official parameter names."""

    block_type: type[Block] = Block  # RWKV-7a/7b use their own block (model/v7a.py)

    def __init__(self, spec: ModelSpec, time_mix: type[nn.Module], channel_mix: type[nn.Module], *, op: str = "torch"):
        super().__init__()
        self.spec = spec
        self.op = op
        self.grad_cp = False
        self.emb = nn.Embedding(spec.vocab_size, spec.n_embd)
        self.blocks = nn.ModuleList(self.block_type(spec, i, time_mix, channel_mix) for i in range(spec.n_layer))
        self.ln_out = nn.LayerNorm(spec.n_embd, eps=LN_EPS)
        self.head = nn.Linear(spec.n_embd, spec.vocab_size, bias=False)
        self.key_order: list[str] | None = None  # the loaded file's key order, kept for round trips
        for block in self.blocks:
            block.att.op = op

    def set_op(self, op: str) -> None:
        self.op = op
        for block in self.blocks:
            block.att.op = op

    def hidden(self, idx: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Final normed hidden states [B, T, C] and the state after the last token."""
        if idx.ndim != 2:
            raise ValueError(f"idx must be [B, T] token ids, got shape {tuple(idx.shape)}")
        x = self.emb(idx)
        v_first = None
        att_shifts, wkvs, ffn_shifts = [], [], []
        for i, block in enumerate(self.blocks):
            args = (x, v_first,
                    None if state is None else state.att_shift[i],
                    None if state is None else state.wkv[i],
                    None if state is None else state.ffn_shift[i])
            if self.grad_cp and self.training and torch.is_grad_enabled():
                x, v_first, a_s, s, f_s = checkpoint(block, *args, use_reentrant=False)
            else:
                x, v_first, a_s, s, f_s = block(*args)
            att_shifts.append(a_s)
            wkvs.append(s)
            ffn_shifts.append(f_s)
        new_state = State(torch.stack(att_shifts), torch.stack(wkvs), torch.stack(ffn_shifts))
        return self.ln_out(x), new_state

    def forward(self, idx: torch.Tensor, state: State | None = None, *, return_state: bool = False):
        """Logits [B, T, V] for token ids [B, T]; with `return_state=True` also the final State."""
        h, new_state = self.hidden(idx, state)
        logits = self.head(h)
        return (logits, new_state) if return_state else logits

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """One recurrent step for generation: tokens [B] → logits [B, V] and the next State."""
        logits, state = self.forward(tokens.view(-1, 1), state, return_state=True)
        return logits[:, -1], state

    def state_dict(self, *args, **kwargs):
        sd = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", args[1] if len(args) > 1 else "")
        if self.key_order and not prefix and set(sd) == set(self.key_order):
            sd = type(sd)((k, sd[k]) for k in self.key_order)
        return sd
