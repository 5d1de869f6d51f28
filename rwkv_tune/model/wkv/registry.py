"""The WKV backends by name: the always-present ones (torch, naive) and `register_op` for the rest.

Backends that need a GPU (cuda, fla) import this module to register themselves; they never import
the `wkv` package that dispatches to them, which loads them by name on first use.
"""

from collections.abc import Callable

from torch import Tensor

from rwkv_tune.model.wkv.chunked6 import wkv6_chunked
from rwkv_tune.model.wkv.chunked7 import wkv7_chunked
from rwkv_tune.model.wkv.naive import wkv6_naive, wkv7_naive

Wkv7Fn = Callable[..., tuple[Tensor, Tensor]]  # (r, log_decay, k, v, a, b, state) -> (y, final_state)
Wkv6Fn = Callable[..., tuple[Tensor, Tensor]]  # (r, log_decay, k, v, u, state) -> (y, final_state)

WKV7_OPS: dict[str, Wkv7Fn] = {"torch": wkv7_chunked, "naive": wkv7_naive}
WKV6_OPS: dict[str, Wkv6Fn] = {"torch": wkv6_chunked, "naive": wkv6_naive}


def register_op(name: str, *, wkv7: Wkv7Fn | None = None, wkv6: Wkv6Fn | None = None) -> None:
    """Make a backend available as op=name (for example "cuda" once its kernels are built)."""
    if wkv7 is not None:
        WKV7_OPS[name] = wkv7
    if wkv6 is not None:
        WKV6_OPS[name] = wkv6
