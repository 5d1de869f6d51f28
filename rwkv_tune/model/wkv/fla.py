"""The "fla" WKV op: Triton kernels from flash-linear-attention (`pip install 'rwkv-tune[fla]'`).

Conventions at the boundary (reference §3.5, wkv-chunked §7):
- fla's `chunk_rwkv7(r, w, k, v, a, b, ...)` takes the log-decay as `w` (older releases call it
  `log_w`); its state is [B, H, K, V], the transpose of our official v7 [B, H, V, K].
- `chunk_rwkv6(r, k, v, w, u, ...)`: log-decay `w`, state [B, H, K, V] = our v6 layout.
- RWKV has no 1/sqrt(K): always `scale=1.0` (fla's rwkv6 default is 1/sqrt(K)).
- Everything is passed by keyword, because releases reorder arguments.
The package `rwkv-fla` installs a different module also named `fla` whose `chunk_rwkv7(r, k, v, a, b,
w=None, log_w=None, ...)` takes the official w; it is detected and refused.
"""

import importlib.metadata
import importlib.util
import inspect
from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor

from rwkv_tune.model.wkv.registry import register_op


class FlaUnavailable(RuntimeError):
    """flash-linear-attention is missing, incompatible, or cannot run here."""


def _dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@cache
def _functions() -> tuple:
    """(chunk_rwkv7, its log-decay keyword, chunk_rwkv6 or None) from fla-org's package, or FlaUnavailable."""
    if importlib.util.find_spec("fla") is None:
        raise FlaUnavailable("flash-linear-attention is not installed; pip install 'rwkv-tune[fla]'")
    if _dist_version("rwkv-fla") is not None:
        raise FlaUnavailable(
            f"the installed `fla` module comes from rwkv-fla {_dist_version('rwkv-fla')}, whose chunk_rwkv7 takes "
            "RWKV's w, not the log-decay; pip uninstall rwkv-fla && pip install flash-linear-attention"
        )
    try:
        from fla.ops.rwkv7 import chunk_rwkv7
    except Exception as exc:  # Triton or CUDA problems surface at import time
        raise FlaUnavailable(f"importing fla.ops.rwkv7 failed: {type(exc).__name__}: {exc}") from exc
    params = list(inspect.signature(chunk_rwkv7).parameters)
    if len(params) < 6 or params[1] not in ("w", "log_w") or "scale" not in params:
        raise FlaUnavailable(
            f"this fla's chunk_rwkv7{tuple(params)} is not the expected (r, w, k, v, a, b, scale, ...); "
            "pip install -U flash-linear-attention"
        )
    try:
        from fla.ops.rwkv6 import chunk_rwkv6
    except Exception:
        chunk_rwkv6 = None
    return chunk_rwkv7, params[1], chunk_rwkv6


def status() -> tuple[bool, str]:
    """(usable, detail) for `rwkv-tune doctor`: can op "fla" run here?"""
    try:
        _functions()
    except FlaUnavailable as exc:
        return False, str(exc)
    if not torch.cuda.is_available():
        return False, "fla is installed but needs a CUDA GPU (Triton)"
    version = _dist_version("flash-linear-attention") or _dist_version("fla-core") or "?"
    return True, f"flash-linear-attention {version}"


def _pad_time(xs: list[Tensor], T_min: int) -> list[Tensor]:
    # fla refuses T < H (it takes that for a head-first layout); zero steps with log-decay 0 are identities.
    pad = T_min - xs[0].shape[1]
    if pad <= 0:
        return xs
    return [F.pad(x, (0, 0, 0, 0, 0, pad)) for x in xs]


def wkv7_fla(r: Tensor, log_decay: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor,
             state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """RWKV-7 WKV via fla's chunk_rwkv7; same contract as `naive.wkv7_naive` (state [B, H, N_value, N_key])."""
    chunk_rwkv7, decay_kw, _ = _functions()
    B, T, H, N = r.shape
    dt = r.dtype
    r_, g_, k_, v_, a_, b_ = _pad_time([x.to(dt) for x in (r, log_decay, k, v, a, b)], H)
    o, s = chunk_rwkv7(
        r=r_, **{decay_kw: g_}, k=k_, v=v_, a=a_, b=b_, scale=1.0,
        initial_state=None if state is None else state.float().transpose(-1, -2).contiguous(),
        output_final_state=True,
    )
    return o[:, :T].to(dt), s.float().transpose(-1, -2)


def wkv6_fla(r: Tensor, log_decay: Tensor, k: Tensor, v: Tensor, u: Tensor,
             state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """RWKV-6/5 WKV via fla's chunk_rwkv6; same contract as `naive.wkv6_naive` (state [B, H, N_key, N_value])."""
    _, _, chunk_rwkv6 = _functions()
    if chunk_rwkv6 is None:
        raise FlaUnavailable("this fla has no fla.ops.rwkv6.chunk_rwkv6")
    B, T, H, N = r.shape
    dt = r.dtype
    r_, g_, k_, v_ = _pad_time([x.to(dt) for x in (r, log_decay, k, v)], H)
    o, s = chunk_rwkv6(
        r=r_, k=k_, v=v_, w=g_, u=u.to(dt), scale=1.0,
        initial_state=None if state is None else state.float().contiguous(),
        output_final_state=True,
    )
    return o[:, :T].to(dt), s.float()


def register() -> bool:
    """Make op="fla" available when fla-org's package imports and a CUDA GPU is visible."""
    if not torch.cuda.is_available():  # checked first: importing fla (Triton) is slow
        return False
    ok, _ = status()
    if not ok:
        return False
    register_op("fla", wkv7=wkv7_fla, wkv6=wkv6_fla if _functions()[2] is not None else None)
    return True


__all__ = ["FlaUnavailable", "register", "status", "wkv6_fla", "wkv7_fla"]
