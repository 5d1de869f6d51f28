"""RWKV-7a "DeepEmbed" (and the skeleton 7b shares): x070 with a per-token 32×32 matrix gating the FFN.

Math in reference/rwkv7-deepembed.md. Runtimes fold `s_emb_x · LN0(emb)` into `s_emb` at load time;
here the two stay apart so both train, and `state_dict()` writes the file's keys unchanged. The
time-mix is x070's; 7b adds `blocks.N.qkv` (model/v7b.py) beside it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from rwkv_tune.model import v7
from rwkv_tune.model.common import RWKV, Block, State, token_shift
from rwkv_tune.model.v7b import AttentionState, DeepEmbedAttention
from rwkv_tune.spec import DE_RANK, ModelSpec

TimeMix = v7.TimeMix


class ChannelMix(v7.ChannelMix):
    """x070's squared-ReLU FFN, its hidden units gated per token by (x·s1)·S(token)·s2 + s0."""

    def __init__(self, spec: ModelSpec, layer_id: int):
        super().__init__(spec, layer_id)
        C, F_, D = spec.n_embd, spec.dim_ffn, DE_RANK
        self.s_emb = nn.Embedding(spec.vocab_size, D * D)
        self.s_emb_x = nn.Linear(C, D * D, bias=False)
        self.s1 = nn.Parameter(torch.zeros(C, D))
        self.s2 = nn.Parameter(torch.zeros(D, F_))
        self.s0 = nn.Parameter(torch.zeros((1, 1, F_) if spec.variant_vec3d else (F_,)))

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor, tokens: torch.Tensor,
                token_emb: torch.Tensor) -> torch.Tensor:
        """x [B, T, C] the ln2-normed input; tokens [B, T]; token_emb [B, T, C] = LN0(emb[tokens])."""
        B, T, _ = x.shape
        k = torch.relu(self.key(x + (x_prev - x) * self.x_k)) ** 2
        S = (self.s_emb(tokens) + self.s_emb_x(token_emb)).view(B, T, DE_RANK, DE_RANK)
        ss = ((x @ self.s1).unsqueeze(-2) @ S).squeeze(-2)
        return self.value(k * (ss @ self.s2 + self.s0))


class DeepEmbedBlock(Block):
    """A 7a block (and, with `qkv`, a 7b block). Receives x already normed by ln0 (the model does it once)."""

    def __init__(self, spec: ModelSpec, layer_id: int, time_mix: type[nn.Module], channel_mix: type[nn.Module]):
        super().__init__(spec, layer_id, time_mix, channel_mix)
        if spec.variant == "7b":
            self.qkv = DeepEmbedAttention(spec, layer_id)

    def forward(self, x, v_first, att_shift, wkv_state, ffn_shift, tokens, token_emb,
                k_past=None, v_past=None, q_prev=None):
        T = x.shape[1]
        attn = None
        if hasattr(self, "qkv"):
            attn = self.qkv(x, tokens, token_emb, k_past, v_past, q_prev)
        xa = self.ln1(x)
        att_out, v_first, wkv_state = self.att(xa, token_shift(xa, att_shift), v_first, wkv_state)
        x = x + att_out if attn is None else x + att_out + attn[0]
        xf = self.ln2(x)
        x = x + self.ffn(xf, token_shift(xf, ffn_shift), tokens[:, -T:], token_emb[:, -T:])
        extra = () if attn is None else attn[1:]
        return (x, v_first, xa[:, -1], wkv_state, xf[:, -1], *extra)


class DeepEmbedRWKV(RWKV):
    """The RWKV-7a / 7b language model; `hidden()` feeds every block the token ids and LN0(emb[ids])."""

    block_type = DeepEmbedBlock

    def hidden(self, idx: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        if idx.ndim != 2:
            raise ValueError(f"idx must be [B, T] token ids, got shape {tuple(idx.shape)}")
        attention = self.spec.variant == "7b"
        past = state.tokens if attention and isinstance(state, AttentionState) and state.past else None
        tokens = idx if past is None else torch.cat([past, idx], dim=1)
        token_emb = self.blocks[0].ln0(self.emb(tokens))  # [B, P+T, C]; the last T rows start the residual
        x = token_emb[:, -idx.shape[1]:]
        v_first = None
        outs = []
        for i, block in enumerate(self.blocks):
            args = [x, v_first,
                    None if state is None else state.att_shift[i],
                    None if state is None else state.wkv[i],
                    None if state is None else state.ffn_shift[i],
                    tokens, token_emb]
            if attention:
                args += [None, None, None] if past is None else [state.k_cache[i], state.v_cache[i], state.q_prev[i]]
            if self.grad_cp and self.training and torch.is_grad_enabled():
                out = checkpoint(block, *args, use_reentrant=False)
            else:
                out = block(*args)
            x, v_first = out[0], out[1]
            outs.append(out[2:])
        stacked = [torch.stack(parts) for parts in zip(*outs, strict=True)]
        if attention:
            new_state = AttentionState(*stacked[:3], tokens, *stacked[3:])
        else:
            new_state = State(*stacked)
        return self.ln_out(x), new_state
