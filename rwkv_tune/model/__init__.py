"""RWKV-5/6/7 (and 7a/7b DeepEmbed) models in plain PyTorch, built from a detected spec and loaded from official files.

`load_model(path)` detects the architecture, builds the matching version's model and loads the
weights with strict key and shape checks. The model keeps the official parameter names and the
file's key order, so `model.state_dict()` is again an official RWKV file.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rwkv_tune.errors import ConfigError
from rwkv_tune.model.common import RWKV, State
from rwkv_tune.model.wkv import load_op
from rwkv_tune.preset.schema import OPS
from rwkv_tune.spec import ModelSpec, detect, strip_wrapper_prefix

__all__ = ["RWKV", "State", "build_model", "load_model", "resolve_op"]



def _version_module(version: int, variant: str = ""):
    if variant:
        from rwkv_tune.model import v7a as module
    elif version == 7:
        from rwkv_tune.model import v7 as module
    elif version == 6:
        from rwkv_tune.model import v6 as module
    else:
        from rwkv_tune.model import v5 as module
    return module


def resolve_op(op: str, device: torch.device | str | None) -> str:
    """Turn `auto` into a concrete WKV backend: cuda kernels on an NVIDIA GPU when built, else torch."""
    if op not in OPS:
        raise ConfigError(f"op '{op}' is not one of {', '.join(OPS)}", "Use op: auto (recommended).")
    if op != "auto":
        return op
    on_cuda = device is not None and torch.device(device).type == "cuda"
    return "cuda" if on_cuda and load_op("cuda") else "torch"


def build_model(spec: ModelSpec, *, op: str = "torch", device: torch.device | str | None = None) -> RWKV:
    """An RWKV model with the given architecture and uninitialised (zero) weights."""
    module = _version_module(spec.version, spec.variant)
    model_type = getattr(module, "DeepEmbedRWKV", RWKV)
    return model_type(spec, module.TimeMix, module.ChannelMix, op=resolve_op(op, device))


def load_model(path: str | Path | dict, *, op: str = "auto", dtype: torch.dtype | None = None,
               device: torch.device | str | None = None) -> RWKV:
    """Load an official RWKV-5/6/7 `.pth`/`.safetensors` file (or state dict) into a model with `.spec`.

    dtype None keeps the file's dtype; the weights are memory-mapped, not copied, when they can be.
    """
    from rwkv_tune.checkpoint import load_state_dict

    raw = load_state_dict(path) if isinstance(path, (str, Path)) else path
    sd = {strip_wrapper_prefix(k): v for k, v in raw.items()}
    spec = detect(sd)
    target = dtype or getattr(torch, spec.dtype)
    sd = {k: (v if v.dtype == target else v.to(target)) for k, v in sd.items()}
    with torch.device("meta"):
        model = build_model(spec, op=op, device=device)
    model.load_state_dict(sd, strict=True, assign=True)
    model.key_order = list(sd)
    if device is not None:
        model = model.to(device)
    return model
