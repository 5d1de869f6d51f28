"""Dataset statistics, and the numbers users used to compute by hand (epoch_steps, magic_prime)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rwkv_tune.data.sampling import magic_prime, usable

PERCENTILES = (50, 90, 99)


def data_stats(sizes: np.ndarray, num_tokens: int | None = None, ctx_len: int | None = None,
               micro_bsz: int = 1, world_size: int = 1) -> dict[str, Any]:
    """Documents, tokens, length percentiles, over-length count and the steps for one full pass."""
    sizes = np.asarray(sizes, dtype=np.int64)
    tokens = int(sizes.sum()) if num_tokens is None else int(num_tokens)
    bsz = micro_bsz * world_size
    out: dict[str, Any] = {"documents": int(len(sizes)), "tokens": tokens}
    if len(sizes):
        out["length"] = {"min": int(sizes.min()), "mean": round(float(sizes.mean()), 1),
                         **{f"p{q}": int(np.percentile(sizes, q, method="nearest")) for q in PERCENTILES},
                         "max": int(sizes.max())}
    n_usable = int(len(usable(sizes)))
    out["micro_bsz"] = micro_bsz
    out["world_size"] = world_size
    out["epoch_steps"] = math.ceil(n_usable / bsz) if n_usable else 0
    if ctx_len:
        out["ctx_len"] = ctx_len
        over = int((sizes > ctx_len + 1).sum())
        out["over_ctx_len"] = over
        out["over_ctx_len_tokens_lost"] = int(np.maximum(sizes - (ctx_len + 1), 0).sum())
        p = magic_prime(tokens, ctx_len)
        get: dict[str, Any] = {"magic_prime": p}
        if p is not None:
            get.update(epoch_steps=math.ceil(p / bsz), coverage=round(p * ctx_len / tokens, 4),
                       rwkv_lm_flags=f"--my_exit_tokens {tokens} --magic_prime {p} --ctx_len {ctx_len}")
        out["get"] = get
    return out
