"""The base model's identity recorded in an adapter: a cheap fingerprint, and the check against it."""

from __future__ import annotations

from collections.abc import Mapping
from hashlib import sha256
from typing import TYPE_CHECKING

import torch

from rwkv_tune.errors import ModelFileError
from rwkv_tune.spec import strip_wrapper_prefix

if TYPE_CHECKING:  # pragma: no cover
    from rwkv_tune.peft.adapter_file import Adapter

_SAMPLES = 256  # values sampled per tensor for the fingerprint


def fingerprint(state_dict: Mapping[str, torch.Tensor]) -> str:
    """A cheap identity of a base model: keys, shapes and a strided sample of values (as bf16).

    Sampling keeps it fast on 14 GB files; casting to bf16 makes it the same whether the model was
    loaded in fp32, bf16 or kept in the file's dtype.
    """
    h = sha256()
    items = sorted((strip_wrapper_prefix(k), v) for k, v in state_dict.items())
    for key, t in items:
        h.update(f"{key}:{tuple(t.shape)};".encode())
        flat = t.detach().reshape(-1)
        n = flat.numel()
        if n > _SAMPLES:
            flat = flat[torch.linspace(0, n - 1, _SAMPLES, dtype=torch.float64).long().to(flat.device)]
        h.update(flat.to(torch.bfloat16).view(torch.int16).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def check_fingerprint(actual: str, adapter: Adapter, *, force: bool = False) -> bool | None:
    """True if the base matches the adapter's recorded base, None if unknown; raise on a mismatch unless forced."""
    if not adapter.base_fingerprint:
        return None
    if actual == adapter.base_fingerprint:
        return True
    if force:
        return False
    raise ModelFileError(f"the adapter was trained on a different base model (fingerprint {adapter.base_fingerprint}, "
                         f"this base is {actual})", "Pass the base model it was trained on, or --force to merge anyway.")
