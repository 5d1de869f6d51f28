"""The WKV recurrence ops behind one dispatch point: `wkv7` (RWKV-7) and `wkv6` (RWKV-6, and v5).

Backends ("ops") are looked up by name in a registry (`registry.py`), so faster ones slot in with
`register_op` without touching the model code; cuda and fla are imported and register themselves on
first use (`load_op`), where they can run:
  "torch"  chunk-parallel plain PyTorch (chunked7 / chunked6), any device, autograd backward
  "naive"  one token at a time, the reference the tests compare against
Contract shared by every op: r, log_decay, k, v (a, b) are [B, T, H, N] of any float dtype;
log_decay = log(decay) <= 0; y comes back [B, T, H, N] in r's dtype, the final state in fp32
(fp64 for fp64 inputs). state may be None (zeros), [B, H, N, N] or [H, N, N] (shared across the batch,
e.g. a trainable time_state; autograd then sums its gradient over the batch).
"""

import importlib
from collections.abc import Callable

import torch
from torch import Tensor

from rwkv_tune.model.wkv.registry import WKV6_OPS, WKV7_OPS, register_op

# Ops that exist by name but are imported and registered only when first asked for, and only where
# they can run (importing fla pulls in Triton, which `import rwkv_tune.model` must not pay for).
_LAZY_OPS = {
    "cuda": ("rwkv_tune.model.wkv.cuda", "it needs an NVIDIA GPU and the compiled kernels"),
    "fla": ("rwkv_tune.model.wkv.fla", "it needs an NVIDIA GPU and the flash-linear-attention package"),
}
_tried: set[str] = set()


def load_op(op: str) -> bool:
    """Register a lazily loaded backend (cuda, fla) if it can run here; whether op is now available."""
    if op in _LAZY_OPS and op not in _tried:
        _tried.add(op)
        importlib.import_module(_LAZY_OPS[op][0]).register()
    return op in WKV7_OPS or op in WKV6_OPS


def op_problem(op: str, device: torch.device | str | None, *, head_size: int | None = None,
               dtype: torch.dtype | None = None, kernel: str = "wkv7") -> str | None:
    """Why `op` cannot run on `device` (None when it can), checked before a run or a benchmark row relies on it.

    torch and naive run anywhere; cuda and fla need a CUDA device and what their `status()` checks; cuda with
    a `head_size` and `dtype` also builds (once, cached) the kernel it would use.
    """
    if op not in _LAZY_OPS:
        return None
    device = torch.device(device if device is not None else "cpu")
    if device.type != "cuda":
        return f"the device is {device.type}, and {_LAZY_OPS[op][1]}"
    module = importlib.import_module(_LAZY_OPS[op][0])
    usable, detail = module.status()
    if not usable:
        return detail
    if op == "cuda" and head_size is not None and dtype is not None:
        try:
            module.load_kernel(kernel, head_size, torch.bfloat16 if dtype == torch.bfloat16 else torch.float32,
                               device)
        except module.KernelUnavailable as exc:
            return str(exc)
    return None


def _lookup(ops: dict, op: str, version: str) -> Callable:
    if op not in ops:
        load_op(op)
    if op in ops:
        return ops[op]
    why = f" ({_LAZY_OPS[op][1]})" if op in _LAZY_OPS else ""
    raise ValueError(
        f"WKV op {op!r} is not available for {version}{why}; available: {', '.join(sorted(ops))}"
    )


def _no_autocast(x: Tensor) -> torch.autocast:
    return torch.autocast(device_type=x.device.type, enabled=False)


def _check(names: str, tensors: tuple[Tensor, ...], state: Tensor | None) -> Tensor | None:
    """Check [B, T, H, N] shapes and return the state as [B, H, N, N] (or None)."""
    shape = tensors[0].shape
    if len(shape) != 4 or shape[1] == 0:
        raise ValueError(f"WKV inputs must be [B, T, H, N] with T >= 1, got r of shape {tuple(shape)}")
    for name, x in zip(names.split(), tensors, strict=True):
        if x.shape != shape:
            raise ValueError(f"WKV input {name} has shape {tuple(x.shape)}, expected {tuple(shape)} like r")
    B, _, H, N = shape
    if state is None:
        return None
    if state.shape == (H, N, N):
        return state.expand(B, H, N, N)
    if state.shape != (B, H, N, N):
        raise ValueError(f"WKV state has shape {tuple(state.shape)}, expected {(B, H, N, N)} or {(H, N, N)}")
    return state


def wkv7(
    r: Tensor,
    log_decay: Tensor,
    k: Tensor,
    v: Tensor,
    a: Tensor,
    b: Tensor,
    state: Tensor | None = None,
    *,
    op: str = "torch",
) -> tuple[Tensor, Tensor]:
    """RWKV-7 WKV: S_t = S_{t-1} diag(e^g_t) + (S_{t-1} a_t) b_t^T + v_t k_t^T, y_t = S_t r_t.

    State layout is the official [B, H, N_value, N_key]. Returns (y, final_state).
    """
    state = _check("r log_decay k v a b", (r, log_decay, k, v, a, b), state)
    if op == "torch" and r.shape[1] == 1:
        op = "naive"  # one token (generation): a single recurrence step beats setting up a chunk
    with _no_autocast(r):  # the recurrence must run in fp32 even inside a bf16 autocast region
        return _lookup(WKV7_OPS, op, "RWKV-7")(r, log_decay, k, v, a, b, state)


def wkv6(
    r: Tensor,
    log_decay: Tensor,
    k: Tensor,
    v: Tensor,
    u: Tensor,
    state: Tensor | None = None,
    *,
    op: str = "torch",
) -> tuple[Tensor, Tensor]:
    """RWKV-6/5 WKV: y_t^T = r_t^T (S_{t-1} + diag(u) k_t v_t^T), S_t = diag(e^g_t) S_{t-1} + k_t v_t^T.

    State layout is [B, H, N_key, N_value]; u is [H, N]. v5 passes its static log-decay expanded to
    [B, T, H, N]. Returns (y, final_state).
    """
    state = _check("r log_decay k v", (r, log_decay, k, v), state)
    H, N = r.shape[2], r.shape[3]
    if u.shape != (H, N):
        raise ValueError(f"WKV bonus u has shape {tuple(u.shape)}, expected {(H, N)}")
    if op == "torch" and r.shape[1] == 1:
        op = "naive"
    with _no_autocast(r):
        return _lookup(WKV6_OPS, op, "RWKV-6/5")(r, log_decay, k, v, u, state)


__all__ = ["WKV6_OPS", "WKV7_OPS", "load_op", "op_problem", "register_op", "wkv6", "wkv7"]
