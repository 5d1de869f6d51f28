"""Which WKV op a run uses: an op named in the preset runs or is refused with the reason; `auto` says when it
falls back to the slower torch op (a `warning` event), instead of a Python warning in the log."""

from __future__ import annotations

import torch

from rwkv_tune.errors import ConfigError
from rwkv_tune.model.wkv import op_problem


def settle_op(model: torch.nn.Module, requested: str, device: torch.device, dtype: torch.dtype) -> str | None:
    """Check (and for `auto`, fix) `model`'s op before training; returns a warning sentence when auto fell back."""
    spec = model.spec
    kernel = "wkv7" if spec.version == 7 else "wkv6"
    if requested in ("cuda", "fla"):
        problem = op_problem(requested, device, head_size=spec.head_size, dtype=dtype, kernel=kernel)
        if problem:
            raise ConfigError(f"train.op = {requested} cannot run here: {problem}",
                              "Use train.op: auto (the fastest op that runs here) or train.op: torch.")
        return None
    if requested != "auto" or device.type != "cuda":
        return None  # on a CPU the torch op is the only choice, not a fallback
    problem = op_problem("cuda", device, head_size=spec.head_size, dtype=dtype, kernel=kernel)
    if problem is None and model.op == "cuda":
        return None
    model.set_op("torch")
    return f"op auto: the CUDA WKV kernels cannot run here ({problem or 'not available'}); using the torch op (slower)"
