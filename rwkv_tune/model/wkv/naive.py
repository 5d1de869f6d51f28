"""Per-token WKV loops for RWKV-7 and RWKV-6/5: slow, obviously correct, the reference for tests.

Inputs are [B, T, H, N]; the math runs in fp32 (fp64 when the inputs are fp64, so the same loop
is the float64 oracle in tests). y comes back in r's dtype, the final state in the compute dtype.
"""

import torch
from torch import Tensor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype WKV math runs in: fp32, or fp64 for fp64 inputs (gradcheck and test oracles)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def wkv7_naive(
    r: Tensor, log_decay: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """RWKV-7 recurrence one token at a time; state [B, H, N_value, N_key] (official layout).

    S_t = S_{t-1} diag(exp(g_t)) + (S_{t-1} a_t) b_t^T + v_t k_t^T,   y_t = S_t r_t.
    """
    B, T, H, N = r.shape
    out_dtype, dt = r.dtype, compute_dtype(r.dtype)
    r, g, k, v, a, b = (x.to(dt) for x in (r, log_decay, k, v, a, b))
    decay = g.exp()
    S = r.new_zeros(B, H, N, N) if state is None else state.to(dt).expand(B, H, N, N)
    ys = []
    for t in range(T):
        sa = S @ a[:, t, :, :, None]  # [B, H, N, 1], reads S_{t-1}
        S = S * decay[:, t, :, None, :] + sa * b[:, t, :, None, :] + v[:, t, :, :, None] * k[:, t, :, None, :]
        ys.append((S @ r[:, t, :, :, None]).squeeze(-1))
    return torch.stack(ys, dim=1).to(out_dtype), S


def wkv6_naive(
    r: Tensor, log_decay: Tensor, k: Tensor, v: Tensor, u: Tensor, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """RWKV-6/5 recurrence one token at a time; state [B, H, N_key, N_value].

    y_t^T = r_t^T (S_{t-1} + diag(u) k_t v_t^T),   S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T.
    """
    B, T, H, N = r.shape
    out_dtype, dt = r.dtype, compute_dtype(r.dtype)
    r, g, k, v = (x.to(dt) for x in (r, log_decay, k, v))
    u = u.to(dt)[None, :, :, None]  # [1, H, N_key, 1]
    decay = g.exp()
    S = r.new_zeros(B, H, N, N) if state is None else state.to(dt).expand(B, H, N, N)
    ys = []
    for t in range(T):
        kv = k[:, t, :, :, None] * v[:, t, :, None, :]  # [B, H, N_key, N_value]
        ys.append((r[:, t, :, None, :] @ (S + u * kv)).squeeze(-2))
        S = decay[:, t, :, :, None] * S + kv
    return torch.stack(ys, dim=1).to(out_dtype), S
