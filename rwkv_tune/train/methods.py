"""The trainer's view of a PEFT method: apply it from the preset, save and load its trainable state."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from rwkv_tune.preset import Preset


def method_config(preset: Preset) -> dict[str, Any]:
    """The preset's method section plus quant: what `rwkv_tune.peft` validates and applies."""
    return {**asdict(preset.method), "quant": preset.quant}


def apply(model: torch.nn.Module, preset: Preset) -> list[torch.nn.Parameter]:
    """Quantize the base if asked and apply the method; afterwards only trainable params require grad.

    With `method.load`, the method is the adapter file's (its method, r, alpha and targets) and training
    starts from its weights; the preset's method name must agree with it."""
    from rwkv_tune import peft

    if not preset.method.load:
        return peft.apply(model, method_config(preset))
    from rwkv_tune.errors import ConfigError
    from rwkv_tune.peft.rwkv_peft import load_any_adapter

    adapter = load_any_adapter(preset.method.load)
    if adapter.config.name != preset.method_name:
        raise ConfigError(f"method.load = {preset.method.load} is a {adapter.config.name} adapter, but method.name = "
                          f"{preset.method.name}", f"Set method.name: {adapter.config.name}, or load a "
                          f"{preset.method_name} adapter.")
    return peft.load_adapter(model, adapter)


def adapter(model: torch.nn.Module) -> Any:
    """The model's adapter tensors (copied to CPU) and metadata; under ZeRO-3 call it with them gathered."""
    from rwkv_tune import peft

    adapter = peft.adapter_state_dict(model)
    adapter.tensors = {k: t.clone() for k, t in adapter.tensors.items()}  # own copies: ZeRO-3 frees gathered data
    return adapter


def save(model_or_adapter: Any, preset: Preset, path: Path) -> None:
    from rwkv_tune import peft

    peft.save_adapter(model_or_adapter, path)


def load(model: torch.nn.Module, preset: Preset, path: Path) -> None:
    from rwkv_tune import peft

    peft.load_adapter(model, path)
