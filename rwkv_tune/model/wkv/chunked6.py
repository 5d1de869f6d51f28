"""Chunk-parallel RWKV-6/5 WKV in plain PyTorch (GLA form with secondary chunking).

Math: shared/reference/wkv-chunked.md §2. v6 decays are unbounded (one step can have g = -1000), so
no decay is ever factorised as e^{G_t} e^{-G_s}, and no exponent is a difference of two cumulative
sums (that loses ulp(|G|) of precision). Every exponent is a direct sum of g <= 0, split at sub-chunk
boundaries:

    for s < t:  sum_{s<l<t} g_l = (rest of s's sub-chunk after s) + (whole sub-chunks in between)
                                + (start of t's sub-chunk before t)

so every factor is <= 1. Inside one sub-chunk the exponent is a pairwise segment sum.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from rwkv_tune.model.wkv.naive import compute_dtype


def _shift(x: Tensor, dim: int, forward: bool) -> Tensor:
    """x[i-1] (forward) or x[i+1] (backward) along dim, with a 0 at the edge."""
    n = x.shape[dim]
    if forward:
        return torch.cat([torch.zeros_like(x.narrow(dim, 0, 1)), x.narrow(dim, 0, n - 1)], dim)
    return torch.cat([x.narrow(dim, 1, n - 1), torch.zeros_like(x.narrow(dim, 0, 1))], dim)


def _excl_cumsum(x: Tensor, dim: int) -> Tensor:
    """sum_{j<i} x_j along dim, summed directly (no cumsum(x) - x cancellation)."""
    return _shift(x, dim, forward=True).cumsum(dim)


def _rev_excl_cumsum(x: Tensor, dim: int) -> Tensor:
    """sum_{j>i} x_j along dim, summed directly."""
    return _shift(x, dim, forward=False).flip(dim).cumsum(dim).flip(dim)


def _segsum(x: Tensor, dim: int) -> Tensor:
    """out[i, j] = sum_{j<l<i} x_l (0 where j >= i-1); the new j axis goes right after dim."""
    dim = dim % x.dim()
    n = x.shape[dim]
    x = _shift(x, dim, forward=True).unsqueeze(dim + 1)  # x_{i-1}, broadcast over j
    idx = torch.arange(n, device=x.device)
    keep = (idx[None, :] < idx[:, None] - 1).reshape((n, n) + (1,) * (x.dim() - dim - 2))
    return torch.where(keep, x, 0.0).cumsum(dim)


def wkv6_chunked(
    r: Tensor,
    log_decay: Tensor,
    k: Tensor,
    v: Tensor,
    u: Tensor,
    state: Tensor | None = None,
    *,
    chunk_size: int = 32,
    sub_chunk: int = 8,
) -> tuple[Tensor, Tensor]:
    """RWKV-6/5 WKV over [B, T, H, N] inputs, L tokens at a time; state [B, H, N_key, N_value].

    Same contract as `naive.wkv6_naive`; any log_decay <= 0 (v6 is unbounded below).
    chunk_size must be a multiple of sub_chunk.
    """
    if chunk_size % sub_chunk:
        raise ValueError(f"chunk_size {chunk_size} must be a multiple of sub_chunk {sub_chunk}")
    B, T, H, N = r.shape
    out_dtype, dt = r.dtype, compute_dtype(r.dtype)
    c = min(sub_chunk, T)
    L = min(chunk_size, -(-T // c) * c)
    n, ns = -(-T // L), L // c
    pad = n * L - T

    def chunks(x: Tensor) -> Tensor:  # [B, T, H, N] -> [B, H, n, ns, c, N]; padded steps are identities
        x = x.to(dt).transpose(1, 2)
        return F.pad(x, (0, 0, 0, pad)).reshape(B, H, n, ns, c, N)

    r, g, k, v = (chunks(x) for x in (r, log_decay, k, v))

    # Direct sums inside each sub-chunk, and over whole sub-chunks inside each chunk.
    g_before = _excl_cumsum(g, -2)  # sum of g in t's sub-chunk before t
    g_after = _rev_excl_cumsum(g, -2)  # sum of g in s's sub-chunk after s
    g_sub = g.sum(-2)  # sub-chunk totals [B, H, n, ns, N]
    g_subs_before = _excl_cumsum(g_sub, -2)[..., None, :]  # whole sub-chunks before, [.., ns, 1, N]
    g_subs_after = _rev_excl_cumsum(g_sub, -2)[..., None, :]
    g_chunk = g_sub.sum(-2)  # chunk totals [B, H, n, N]

    # Off-diagonal sub-chunk blocks (key sub-chunk j < query sub-chunk i).
    r_in = r * g_before.exp()
    k_in = k * g_after.exp()
    between = _segsum(g_sub, -2).exp()  # [B, H, n, ns_i, ns_j, N]
    m_off = (r_in.unsqueeze(-3) * between.unsqueeze(-2)) @ k_in.unsqueeze(-4).mT  # [.., i, j, c, c]

    # Diagonal blocks: pairwise exponents within a sub-chunk, plus the u bonus on the diagonal.
    pair = _segsum(g, -2).exp()  # [B, H, n, ns, c_t, c_s, N]
    m_diag = (r.unsqueeze(-2) * k.unsqueeze(-3) * pair).sum(-1)
    idx = torch.arange(c, device=r.device)
    m_diag = torch.where(idx[None, :] < idx[:, None], m_diag, 0.0)
    bonus = (r * u.to(dt)[:, None, None, None, :] * k).sum(-1)
    m_diag = m_diag + torch.diag_embed(bonus)

    sub = torch.arange(ns, device=r.device)
    i_, j_ = sub[:, None, None, None], sub[None, :, None, None]
    m = torch.where(j_ < i_, m_off, torch.where(j_ == i_, m_diag.unsqueeze(-3), 0.0))
    y = torch.einsum("...ijts,...jsn->...itn", m, v)  # intra-chunk part [B, H, n, ns, c, N]

    # State read at the chunk start, and state hand-off between chunks.
    r_state = (r * (g_before + g_subs_before).exp()).reshape(B, H, n, L, N)
    k_state = (k * (g_after + g_subs_after).exp()).reshape(B, H, n, L, N)
    kv = k_state.mT @ v.reshape(B, H, n, L, N)  # [B, H, n, N_key, N_value]
    decay = g_chunk.exp()[..., None]

    S = r.new_zeros(B, H, N, N) if state is None else state.to(dt).expand(B, H, N, N)
    starts = []
    for i in range(n):
        starts.append(S)
        S = torch.addcmul(kv[:, :, i], decay[:, :, i], S)
    y = y.reshape(B, H, n, L, N) + r_state @ torch.stack(starts, dim=2)
    y = y.reshape(B, H, n * L, N)[:, :, :T].transpose(1, 2)
    return y.to(out_dtype), S
