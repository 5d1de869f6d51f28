"""Chunk-parallel RWKV-7 WKV in plain PyTorch (DPLR transition, one triangular solve per chunk).

Math and shapes: shared/reference/wkv-chunked.md §3. Per chunk of L tokens, u_t = S_{t-1} a_t turns
the rank-1 update into a unit-lower-triangular L×L system; everything else is batched matmuls, and
only the state hand-off between chunks (T/L steps) is sequential. Autograd gives the backward.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from rwkv_tune.model.wkv.naive import compute_dtype


def wkv7_chunked(
    r: Tensor,
    log_decay: Tensor,
    k: Tensor,
    v: Tensor,
    a: Tensor,
    b: Tensor,
    state: Tensor | None = None,
    *,
    chunk_size: int = 32,
) -> tuple[Tensor, Tensor]:
    """RWKV-7 WKV over [B, T, H, N] inputs, L tokens at a time; state [B, H, N_value, N_key].

    Same contract as `naive.wkv7_naive`. log_decay must be >= -0.6065 (the v7 clamp): the intra-chunk
    decays are factorised as e^{G_t} e^{-G_s}, which stays inside fp32 range for L up to ~128.
    """
    B, T, H, N = r.shape
    out_dtype, dt = r.dtype, compute_dtype(r.dtype)
    L = min(chunk_size, T)
    n = -(-T // L)
    pad = n * L - T

    def chunks(x: Tensor) -> Tensor:  # [B, T, H, N] -> [B, H, n, L, N]; padded steps are identities
        x = x.to(dt).transpose(1, 2)
        return F.pad(x, (0, 0, 0, pad)).reshape(B, H, n, L, N)

    r, g, k, v, a, b = (chunks(x) for x in (r, log_decay, k, v, a, b))
    G = g.cumsum(-2)  # inclusive, restarted every chunk
    G_excl = G - g
    gamma = G[..., -1:, :]  # chunk total [B, H, n, 1, N]

    r_dec = r * G.exp()  # R~
    a_dec = a * G_excl.exp()  # A~
    inv = (-G).exp()
    k_inv, b_inv = k * inv, b * inv  # K breve, B breve (factors up to e^{0.61 L})
    to_end = (gamma - G).exp()
    k_end, b_end = k * to_end, b * to_end  # K^, B^ (decay to the chunk end, <= 1)

    incl = torch.ones(L, L, dtype=torch.bool, device=r.device).tril()
    strict = incl.tril(-1)
    m_rk = torch.where(incl, r_dec @ k_inv.mT, 0.0)
    m_rb = torch.where(incl, r_dec @ b_inv.mT, 0.0)
    m_ak = torch.where(strict, a_dec @ k_inv.mT, 0.0)
    m_ab = torch.where(strict, a_dec @ b_inv.mT, 0.0)

    # (I - M_ab) [W | U0] = [A~ | M_ak V]; unitriangular ignores the (zero) diagonal of -M_ab.
    # Forward substitution is stable here; a Neumann-series inverse is not (note §4).
    rhs = torch.cat([a_dec, m_ak @ v], dim=-1)
    wu = torch.linalg.solve_triangular(-m_ab, rhs, upper=False, unitriangular=True)
    w, u0 = wu[..., :N], wu[..., N:]

    q = r_dec + m_rb @ w  # Y = Q S0^T + Y0
    y0 = m_rk @ v + m_rb @ u0
    p = torch.diag_embed(gamma.squeeze(-2).exp()) + w.mT @ b_end  # S_L = S0 P + C
    c = v.mT @ k_end + u0.mT @ b_end

    S = r.new_zeros(B, H, N, N) if state is None else state.to(dt).expand(B, H, N, N)
    starts = []
    for i in range(n):
        starts.append(S)
        S = S @ p[:, :, i] + c[:, :, i]
    y = y0 + q @ torch.stack(starts, dim=2).mT
    y = y.reshape(B, H, n * L, N)[:, :, :T].transpose(1, 2)
    return y.to(out_dtype), S
