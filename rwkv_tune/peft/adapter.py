"""A model's adapter out and back in, and the pure merge of an adapter into a base state dict.

`adapter_state_dict` / `save_adapter` take the adapter of a model prepared by `base.apply`;
`load_adapter` puts one back; `merge` / `merge_iter` fold it into a base as a pure function on tensors.
The file format itself is `adapter_file.py`, the base identity `fingerprint.py`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from rwkv_tune import __version__
from rwkv_tune.checkpoint import save_state_dict
from rwkv_tune.errors import ConfigError, ModelFileError
from rwkv_tune.peft import get_method
from rwkv_tune.peft.adapter_file import Adapter, read_adapter
from rwkv_tune.peft.base import (
    AdaptedLinear,
    Method,
    PeftInfo,
    apply_method,
    target_modules,
    trainable_parameters,
)
from rwkv_tune.peft.fingerprint import check_fingerprint, fingerprint
from rwkv_tune.spec import detect

__all__ = ["Adapter", "Folding", "adapter_state_dict", "check_fingerprint", "check_fits", "fingerprint",
           "load_adapter", "merge", "merge_iter", "read_adapter", "save_adapter"]


def adapter_state_dict(model: torch.nn.Module) -> Adapter:
    """The adapter of a model prepared by `apply`: its trainable tensors (plus PiSSA init) and metadata."""
    info = getattr(model, "peft_info", None)
    if info is None:
        raise ConfigError("this model has no PEFT method applied", "Call rwkv_tune.peft.apply(model, cfg) first.")
    tensors: dict[str, torch.Tensor] = {}
    owned: set[str] = set()
    for name, module in model.named_modules():
        if isinstance(module, AdaptedLinear):
            for suffix, t in module.adapter_tensors().items():
                tensors[f"{name}.{suffix}"] = t.detach().cpu()
            owned.update(f"{name}.{n}" for n, _ in module.named_parameters(recurse=False))
    for name, p in model.named_parameters():
        if name in owned:
            continue
        if p.requires_grad or info.config.name == "state" and name.endswith(".att.time_state"):
            tensors[name] = p.detach().cpu()
    spec = {k: v for k, v in info.spec.to_dict().items() if k not in ("params", "size_name")}
    return Adapter(tensors, info.config, info.fingerprint, spec, str(info.dtype).removeprefix("torch."), __version__)


def save_adapter(model: Any, path_or_cfg: Any, path: str | Path | None = None) -> Path:
    """Write a model's (or an `Adapter`'s) adapter as `.safetensors` with metadata, atomically.

    Called as `save_adapter(model, path)`; `save_adapter(model, cfg, path)` is accepted too (cfg is
    already recorded on the model by `apply`).
    """
    target = Path(path if path is not None else path_or_cfg)
    if target.suffix != ".safetensors":
        raise ConfigError(f"adapter path {target} must end in .safetensors (it carries the method's metadata)",
                          f"Use {target.with_suffix('.safetensors').name}.")
    adapter = model if isinstance(model, Adapter) else adapter_state_dict(model)
    return save_state_dict(adapter.tensors, target, adapter.metadata())


def load_adapter(model: nn.Module, source: Any, *, force: bool = False) -> list[nn.Parameter]:
    """Load an adapter (path or `Adapter`) into a model: applies its method first on a fresh base model.

    On a model where the same method is already applied (a trainer resuming), only the tensors are
    copied in, and PiSSA's frozen residual is rebuilt from the saved init if the fresh one differs.
    """
    adapter = source if isinstance(source, Adapter) else read_adapter(source)
    method = get_method(adapter.config.name)
    info: PeftInfo | None = getattr(model, "peft_info", None)
    modules = adapter.linear_modules(method)
    if info is None:
        check_fingerprint(fingerprint(model.state_dict()), adapter, force=force)
        apply_method(model, adapter.config, modules=modules, init=adapter.tensors)
    else:
        mine, theirs = info.config.to_dict(), adapter.config.to_dict()
        if mine != theirs:
            diff = next(k for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k))
            raise ConfigError(f"the adapter was trained with method.{diff} = {theirs.get(diff)!r}, but the model has "
                              f"{mine.get(diff)!r}", "Resume with the preset the adapter was trained with.")
        check_fingerprint(info.fingerprint, adapter, force=force)
        if hasattr(method, "reinit"):
            method.reinit(model, modules, adapter.tensors)
    _copy_tensors(model, adapter.tensors, method)
    return trainable_parameters(model)


@torch.no_grad()
def _copy_tensors(model: nn.Module, tensors: dict[str, torch.Tensor], method: Method) -> None:
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    for key, value in tensors.items():
        target = params.get(key, buffers.get(key))
        if target is None:
            if key.rpartition(".")[2] in method.suffixes:
                continue  # e.g. PiSSA init tensors already used by wrap()
            raise ConfigError(f"adapter tensor '{key}' has no place in this model",
                              "The adapter was trained on a different base or method.")
        if tuple(target.shape) != tuple(value.shape):
            raise ConfigError(f"adapter tensor '{key}' has shape {list(value.shape)}, the model expects "
                              f"{list(target.shape)}", "The adapter was trained on a different base model.")
        # a fresh tensor, not copy_(): the loaded model's tensors may alias the caller's state dict
        target.data = value.detach().to(device=target.device, dtype=target.dtype).clone()


def _split(adapter: Adapter, method: Any) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    linear: dict[str, dict[str, torch.Tensor]] = {}
    dense: dict[str, torch.Tensor] = {}
    for key, t in adapter.tensors.items():
        module, _, suffix = key.rpartition(".")
        if suffix in method.suffixes:
            linear.setdefault(module, {})[suffix] = t
        else:
            dense[key] = t
    return linear, dense


def _check_fits(base: Mapping[str, torch.Tensor], adapter: Adapter, method: Any,
                linear: dict[str, dict[str, torch.Tensor]], dense: dict[str, torch.Tensor]) -> dict[str, str]:
    """Name the first adapter key that does not fit the base; return {insert_before_key: new_key}."""
    fix = "The adapter was trained on a different base model; check --base."
    for module, parts in linear.items():
        wkey = module + ".weight"
        if wkey not in base or base[wkey].ndim != 2:
            raise ModelFileError(f"adapter key '{module}.{next(iter(parts))}' adapts '{wkey}', which the base model "
                                 "does not have", fix)
    for wkey in base:  # in the base's order, so the first mismatch named is the first in the file
        module = wkey[: -len(".weight")]
        if not wkey.endswith(".weight") or module not in linear:
            continue
        parts = linear[module]
        out_f, in_f = base[wkey].shape
        for suffix, want in method.expected_shapes(adapter.config, out_f, in_f).items():
            if suffix not in parts:
                raise ModelFileError(f"adapter is missing '{module}.{suffix}' ({adapter.config.name} needs it)",
                                     "The adapter file is incomplete; re-save it.")
            if tuple(parts[suffix].shape) != tuple(want):
                raise ModelFileError(f"adapter key '{module}.{suffix}' has shape {list(parts[suffix].shape)}, but base "
                                     f"'{wkey}' {list(base[wkey].shape)} needs {list(want)}", fix)
    inserts: dict[str, str] = {}
    for key, t in dense.items():
        if key in base:
            if tuple(t.shape) != tuple(base[key].shape):
                raise ModelFileError(f"adapter key '{key}' has shape {list(t.shape)}, but the base's is "
                                     f"{list(base[key].shape)}", fix)
        elif key.endswith(".att.time_state") and key.replace("time_state", "receptance.weight") in base:
            inserts[key.replace("time_state", "receptance.weight")] = key
        else:
            raise ModelFileError(f"adapter key '{key}' is neither an adapter tensor of method {adapter.config.name} nor "
                                 "a tensor of the base model", "Refusing to guess; check the adapter and --base.")
    if inserts:  # a state file names every layer; fill any it lacks with the zero state (no effect)
        for key in base:
            if key.endswith(".att.receptance.weight") and key not in inserts:
                inserts[key] = key.replace("receptance.weight", "time_state")
    return inserts


def check_fits(base: Mapping[str, torch.Tensor], adapter: Adapter) -> None:
    """Raise ModelFileError naming the first adapter key that does not fit the base (or is unknown)."""
    method = get_method(adapter.config.name)
    _check_fits(base, adapter, method, *_split(adapter, method))


class Folding:
    """How an adapter changes a base model, tensor by tensor; checked against the base when made.

    Linear adapters fold into their weight in fp32 (`method.merge_weight`); dense tensors
    (train_parts, full, time_state) replace the base's; with `quant`, the targeted Linears become
    dequant(quant(W)), the weights a quantized run trained against.
    """

    def __init__(self, base: Mapping[str, torch.Tensor], adapter: Adapter, quant: str | None = None):
        self.config = adapter.config
        self.method = get_method(adapter.config.name)
        self.linear, self.dense = _split(adapter, self.method)
        self.inserts = _check_fits(base, adapter, self.method, self.linear, self.dense)
        self.quant = quant if quant and quant != "none" else None
        self.quantized: set[str] = set()
        if self.quant:
            self.quantized = set(target_modules(detect(base), adapter.config)) | set(self.linear)

    def fold(self, key: str, t: torch.Tensor) -> torch.Tensor | None:
        """The merged value of base tensor `key` (fp32 for a Linear, the adapter's for dense), None: unchanged."""
        if key in self.dense:
            return self.dense[key]
        module = key[: -len(".weight")] if key.endswith(".weight") else None
        if module not in self.linear and module not in self.quantized:
            return None
        from rwkv_tune.quant import quantize_dequantize

        def q(w: torch.Tensor) -> torch.Tensor:
            return quantize_dequantize(w, self.quant) if module in self.quantized else w

        if module in self.linear:
            parts = {s: v.float() for s, v in self.linear[module].items()}
            return self.method.merge_weight(t.float(), parts, self.config, q)
        return q(t.float())


def merge_iter(base: Mapping[str, torch.Tensor], adapter: Adapter, *, quant: str | None = None,
               dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield the merged model tensor by tensor, in the base's key order (pure: no model is built).

    See `Folding` for what changes. State tuning adds `blocks.N.att.time_state` right before each
    layer's receptance (where RWKV-LM registers it), as RWKV-PEFT's merge_state does. Output
    tensors are `dtype` (floating point ones) or the base tensor's dtype; unchanged ones are the
    base's own tensors when no conversion is needed.
    """
    folding = Folding(base, adapter, quant)

    def out(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        target = dtype if dtype is not None and t.is_floating_point() else like.dtype
        return t.detach().to(device="cpu", dtype=target).contiguous()

    for key, t in base.items():
        if key in folding.inserts:
            new = folding.inserts[key]
            state = folding.dense.get(new)
            if state is None:
                state = torch.zeros(_state_shape(base, new))
            yield new, out(state, t)
        merged = folding.fold(key, t)
        yield key, out(t if merged is None else merged, t)


def _state_shape(base: Mapping[str, torch.Tensor], key: str) -> tuple[int, int, int]:
    """[H, N, N] for a layer's time_state, from r_k (v7) or time_faaaa (v5/v6)."""
    prefix = key[: -len("time_state")]
    for name in ("r_k", "time_faaaa"):
        if prefix + name in base:
            h, n = base[prefix + name].shape
            return (h, n, n)
    raise ModelFileError(f"cannot tell the state shape for '{key}'", "The base model is not RWKV-5/6/7.")


def merge(base: Mapping[str, torch.Tensor], adapter: Adapter, *, quant: str | None = None,
          dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The merged state dict: the base's keys, order, shapes and dtypes, adapter folded in, no adapter keys."""
    return dict(merge_iter(base, adapter, quant=quant, dtype=dtype))
