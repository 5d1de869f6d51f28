"""RWKV-7b "DeepEmbed Attention" (DEA): a small soft-capped softmax attention beside the x070 time-mix.

Math in reference/rwkv7-deepembed.md. Each layer's `qkv` module reads the residual stream entering
the layer (not normed by ln1) and adds its output to the residual next to the time-mix. Per token it
caches only the 32-dim k1 and v1 projections (and the previous raw q); keys and values of past tokens
are rebuilt from that cache, so the 7b state grows with the context. Training a chunk is ordinary
causal attention; infctx carries the cache of the earlier chunks in `AttentionState`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from rwkv_tune.model.common import LN_EPS, State
from rwkv_tune.spec import DEA_DIM, DEA_RANK, ModelSpec

SCORE_CAP = 64.0  # scores = SCORE_CAP · tanh(q·k / SCORE_SCALE)
SCORE_SCALE = 1024.0


@dataclass
class AttentionState(State):
    """The x070 state plus the 7b attention cache of every past token.

    tokens: [B, P] ids of the P past tokens; k_cache / v_cache: [L, B, P, 32] their k1 / v1 projections;
    q_prev: [L, B, 256] the last token's raw q (token shift of q).
    """

    tokens: torch.Tensor | None = None
    k_cache: torch.Tensor | None = None
    v_cache: torch.Tensor | None = None
    q_prev: torch.Tensor | None = None

    def detach(self) -> AttentionState:
        return AttentionState(self.att_shift.detach(), self.wkv.detach(), self.ffn_shift.detach(), self.tokens,
                              self.k_cache.detach(), self.v_cache.detach(), self.q_prev.detach())

    @property
    def past(self) -> int:
        return 0 if self.tokens is None else self.tokens.shape[1]


class DeepEmbedAttention(nn.Module):
    """`blocks.N.qkv`: q from the current tokens, k and v rebuilt over the whole context from the k1/v1 cache."""

    def __init__(self, spec: ModelSpec, layer_id: int):
        super().__init__()
        C, V = spec.n_embd, spec.vocab_size
        self.qq = nn.Linear(C, DEA_DIM, bias=False)
        self.k1 = nn.Parameter(torch.zeros(C, DEA_RANK))
        self.k2 = nn.Parameter(torch.zeros(DEA_RANK, DEA_DIM))
        self.k_emb = nn.Embedding(V, DEA_DIM)
        self.k_emb_x = nn.Linear(C, DEA_DIM, bias=False)
        self.v1 = nn.Parameter(torch.zeros(C, DEA_RANK))
        self.v2 = nn.Parameter(torch.zeros(DEA_RANK, C))
        self.v_emb = nn.Embedding(V, C)
        self.v_emb_x = nn.Linear(C, C, bias=False)
        lead = (1, 1) if spec.variant_vec3d else ()  # files store these mixes as [n] or [1, 1, n]
        self.x_q = nn.Parameter(torch.zeros(*lead, DEA_DIM))
        self.x_k = nn.Parameter(torch.zeros(*lead, DEA_DIM))
        self.x_v = nn.Parameter(torch.zeros(*lead, C))
        self.lnq = nn.LayerNorm(DEA_DIM, eps=LN_EPS)
        self.lnk = nn.LayerNorm(DEA_DIM, eps=LN_EPS)
        self.lnv = nn.LayerNorm(C, eps=LN_EPS)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, token_emb: torch.Tensor,
                k_past: torch.Tensor | None, v_past: torch.Tensor | None, q_prev: torch.Tensor | None):
        """x [B, T, C] the layer input; tokens [B, P+T] and token_emb [B, P+T, C] (LN0 of the embedding) of the
        whole context; k_past / v_past [B, P, 32] the cache. Returns (out [B, T, C], k1s, v1s, last raw q)."""
        T = x.shape[1]
        q = self.qq(x)
        k1s = x @ self.k1 if k_past is None else torch.cat([k_past.to(x.dtype), x @ self.k1], dim=1)
        v1s = x @ self.v1 if v_past is None else torch.cat([v_past.to(x.dtype), x @ self.v1], dim=1)
        k = (k1s @ self.k2) * (self.k_emb(tokens) + self.k_emb_x(token_emb))
        v = torch.tanh(v1s @ self.v2) * (self.v_emb(tokens) + self.v_emb_x(token_emb))

        q_last = q[:, -1]
        q_shifted = F.pad(q, (0, 0, 1, -1)) if q_prev is None else torch.cat([q_prev.unsqueeze(1).to(q.dtype), q[:, :-1]], 1)
        q = self.lnq(q + (q_shifted - q) * self.x_q)
        k = self.lnk(k + (F.pad(k, (0, 0, 1, -1)) - k) * self.x_k)  # k and v shift over the whole context
        v = self.lnv(v + (F.pad(v, (0, 0, 1, -1)) - v) * self.x_v)

        scores = SCORE_CAP * torch.tanh((q @ k.mT) / SCORE_SCALE)  # [B, T, P+T]
        S = k.shape[1]
        future = torch.ones(T, S, dtype=torch.bool, device=x.device).triu(S - T + 1)
        scores = scores.masked_fill(future, float("-inf"))
        out = torch.softmax(scores.float(), dim=-1).to(v.dtype) @ v
        return out, k1s, v1s, q_last
