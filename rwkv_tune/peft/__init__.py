"""Parameter-efficient fine-tuning: LoRA, PiSSA, MiSS (DiSHA Bone/Bat), state tuning, train_parts, full.

Every method sits behind one interface (`base.py`): `apply(model, cfg)` returns the trainable
parameters, `adapter_state_dict(model)` / `save_adapter` / `load_adapter` (`adapter.py`) handle its
self-describing safetensors file (`adapter_file.py`), and `merge(base_state_dict, adapter)` folds it
into the base as a pure function on tensors. This package imports torch only when a method is used, so `PeftConfig` stays torch-free.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rwkv_tune.errors import ConfigError
from rwkv_tune.peft.config import ALIASES, METHODS, PeftConfig, canonical_name, default_targets, parse_layers

if TYPE_CHECKING:  # pragma: no cover
    from rwkv_tune.peft.base import Method

# name → "module:Class"; disha/bone/bat are names of miss (one implementation, canonical name written).
_REGISTRY = {
    "lora": "rwkv_tune.peft.lora:LoRA",
    "pissa": "rwkv_tune.peft.pissa:PiSSA",
    "miss": "rwkv_tune.peft.miss:MiSS",
    "state": "rwkv_tune.peft.state:StateTuning",
    "full": "rwkv_tune.peft.full:Full",
}

# One line on each method a user picks (bat: miss in its block-wise mode), for the `init` wizard's menu.
METHOD_HELP = {
    "lora": "LoRA: a low-rank update B·A on every Linear; the well-trodden default",
    "pissa": "PiSSA: LoRA started from the weights' top singular vectors; converges faster",
    "miss": "MiSS / DiSHA-Bone: one shared shard update per Linear; fewer parameters than LoRA",
    "bat": "MiSS / DiSHA-Bat: block-wise update from the weights; r must divide the layer widths",
    "state": "state tuning: trains only the initial WKV state; tiny files, learns style and format, not facts",
    "full": "full fine-tuning: every weight; the most memory, no quantisation",
}

_API = {
    "apply": "base", "prepare": "base", "trainable_parameters": "base", "trainable_summary": "base",
    "param_groups": "base", "target_modules": "base", "count_trainable": "base",
    "Adapter": "adapter_file", "read_adapter": "adapter_file", "fingerprint": "fingerprint",
    "adapter_state_dict": "adapter", "save_adapter": "adapter", "load_adapter": "adapter",
    "merge": "adapter", "merge_iter": "adapter",
}

__all__ = ["ALIASES", "METHODS", "METHOD_HELP", "PeftConfig", "canonical_name", "default_targets", "get_method",
           "parse_layers", *_API]


def get_method(name: str) -> Method:
    """The method object for a name or alias (disha, bone, bat → miss)."""
    canonical = canonical_name(name)
    if canonical not in _REGISTRY:
        raise ConfigError(f"method.name = {name!r} is not a method",
                          f"Use one of: {', '.join(METHODS)} (disha, bone, bat are names of miss).")
    module_name, cls = _REGISTRY[canonical].split(":")
    return getattr(importlib.import_module(module_name), cls)()


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(f"rwkv_tune.peft.{_API[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rwkv_tune.peft' has no attribute {name!r}")
