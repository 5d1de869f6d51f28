"""The PEFT interface: apply a method to a loaded model, list its trainable parameters, load an adapter back.

A method either wraps the targeted Linear layers (`AdaptedLinear`: the frozen weight keeps its
official name `blocks.N.att.key.weight`, the adapter tensors sit beside it as `….lora_A`, `….miss`…),
or changes other parameters (state tuning, full). Dense `train_parts` are unfrozen on top.
`apply` records what it did in `model.peft_info`, which `adapter.adapter_state_dict` reads
(and `adapter.load_adapter` puts an adapter file back through).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from math import prod
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from rwkv_tune.errors import ConfigError
from rwkv_tune.peft import get_method
from rwkv_tune.peft.config import ATT_TARGETS, DEEPEMBED_TARGETS, PeftConfig, default_targets, parse_layers
from rwkv_tune.peft.fingerprint import fingerprint
from rwkv_tune.peft.parts import is_part

if TYPE_CHECKING:  # pragma: no cover
    from rwkv_tune.spec import ModelSpec

Quantizer = Callable[[torch.Tensor], torch.Tensor]


class AdaptedLinear(nn.Module):
    """A Linear whose weight [out, in] is frozen (optionally stored quantized) plus a method's trainable delta."""

    suffixes: ClassVar[tuple[str, ...]] = ()  # the adapter tensors this layer saves, e.g. ("lora_A", "lora_B")

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = nn.Parameter(linear.weight.detach(), requires_grad=False)
        self.register_module("qweight", None)  # a quant.QuantizedWeight when the base is quantized

    def frozen_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The frozen base weight [out, in] (dequantized on the fly when stored quantized)."""
        w = self.qweight.dequantize(dtype) if self.qweight is not None else self.weight
        return w if dtype is None else w.to(dtype)

    def delta_out(self, x: torch.Tensor) -> torch.Tensor | None:
        """The adapter's additive output for input x (None: no adapter, a plain frozen/quantized Linear)."""
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.frozen_weight(x.dtype))
        delta = self.delta_out(x)
        return y if delta is None else y + delta

    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors saved in the adapter file for this layer, by suffix."""
        return {s: getattr(self, s) for s in self.suffixes}

    def extra_repr(self) -> str:
        q = f", quant={self.qweight.kind}" if self.qweight is not None else ""
        return f"in_features={self.in_features}, out_features={self.out_features}{q}"


class Method:
    """One PEFT method: how it changes a model and how its adapter folds back into base weights."""

    name: ClassVar[str]
    suffixes: ClassVar[tuple[str, ...]] = ()  # per-Linear adapter tensor names (empty: not a Linear adapter)

    def check(self, cfg: PeftConfig, module: str, out_features: int, in_features: int) -> None:
        """Raise ConfigError if this Linear cannot take the method with these settings."""

    def wrap(self, linear: nn.Linear, cfg: PeftConfig, init: dict[str, torch.Tensor]) -> AdaptedLinear:
        """The adapted replacement for one Linear (init: this layer's saved tensors, e.g. PiSSA's A₀/B₀)."""
        raise NotImplementedError

    def prepare(self, model: nn.Module, cfg: PeftConfig, layers: tuple[int, ...]) -> None:
        """Changes beyond wrapping Linears (state tuning's time_state, full's unfreezing)."""

    def count(self, cfg: PeftConfig, out_features: int, in_features: int) -> int:
        """Trainable parameters this method adds to one Linear [out, in]."""
        return 0

    def merge_weight(self, w: torch.Tensor, parts: dict[str, torch.Tensor], cfg: PeftConfig,
                     q: Quantizer) -> torch.Tensor:
        """The merged fp32 weight from the fp32 base weight w and this Linear's adapter tensors."""
        raise NotImplementedError

    def expected_shapes(self, cfg: PeftConfig, out_features: int, in_features: int) -> dict[str, tuple[int, ...]]:
        """The adapter tensor shapes for one Linear, to name a mismatch before any math."""
        return {}


@dataclass
class PeftInfo:
    """What `apply` did to a model (kept on `model.peft_info`)."""

    config: PeftConfig
    fingerprint: str
    spec: ModelSpec
    dtype: torch.dtype
    modules: tuple[str, ...]  # wrapped Linear modules
    layers: tuple[int, ...]


def linear_shapes(spec: ModelSpec) -> dict[str, tuple[int, int]]:
    """[out, in] of every official Linear module, by module name (e.g. 'blocks.3.ffn.key')."""
    return {k[: -len(".weight")]: (s[0], s[1]) for k, s in spec.expected_shapes().items()
            if k.endswith(".weight") and len(s) == 2 and k.startswith("blocks.")}


def target_modules(spec: ModelSpec, cfg: PeftConfig) -> tuple[str, ...]:
    """The Linear modules a config adapts, e.g. ('blocks.0.att.receptance', …), in file order."""
    defaults = default_targets(spec.version)
    allowed = defaults + tuple(t for t in DEEPEMBED_TARGETS if spec.variant == "7b" or spec.variant and t.startswith("ffn."))
    targets: list[str] = []
    for t in cfg.targets if cfg.targets is not None else defaults:
        targets.extend([a for a in defaults if a.startswith(t + ".")] if t in ("att", "ffn") else [t])
    for t in targets:
        if t not in allowed:
            kind = "gate" if t == "att.gate" else "receptance"
            raise ConfigError(f"method.targets has {t!r}, but RWKV-{spec.version} has no {t} Linear "
                              f"(its {kind} is not a Linear layer)" if t in ("att.gate", "ffn.receptance")
                              else f"method.targets has {t!r}, which RWKV-{spec.version} does not have",
                              f"Use any of: {', '.join(allowed)}.")
    layers = parse_layers(cfg.layers, spec.n_layer) or tuple(range(spec.n_layer))
    order = [t for t in ATT_TARGETS + ("ffn.key", "ffn.receptance", "ffn.value") + DEEPEMBED_TARGETS if t in targets]
    return tuple(f"blocks.{i}.{t}" for i in layers for t in order)


def _validate(spec: ModelSpec, cfg: PeftConfig, method: Method, modules: Iterable[str]) -> None:
    shapes = linear_shapes(spec)
    for module in modules:
        if module not in shapes:
            raise ConfigError(f"the model has no Linear '{module}'", "Check method.targets for this RWKV version.")
        method.check(cfg, module, *shapes[module])


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, new)


def apply(model: nn.Module, cfg: PeftConfig | dict[str, Any]) -> list[nn.Parameter]:
    """Apply a method (and `cfg.quant`) to a loaded model in place; return the trainable parameters."""
    cfg = cfg if isinstance(cfg, PeftConfig) else PeftConfig.from_dict(cfg)
    return apply_method(model, cfg)


prepare = apply


def apply_method(model: nn.Module, cfg: PeftConfig, *, modules: tuple[str, ...] | None = None,
                 init: dict[str, torch.Tensor] | None = None) -> list[nn.Parameter]:
    """`apply`, with the Linear modules to wrap and their saved init tensors given (loading an adapter)."""
    if getattr(model, "peft_info", None) is not None:
        raise ConfigError(f"this model already has method {model.peft_info.config.name} applied",
                          "Load a fresh base model before applying another method.")
    spec: ModelSpec = model.spec
    method = get_method(cfg.name)
    layers = parse_layers(cfg.layers, spec.n_layer) or tuple(range(spec.n_layer))
    targets = target_modules(spec, cfg)
    if modules is None:
        modules = targets if method.suffixes else ()
    _validate(spec, cfg, method, modules)
    if cfg.quant != "none":
        from rwkv_tune.quant import require_bitsandbytes

        require_bitsandbytes(cfg.quant)
    fp = fingerprint(model.state_dict())
    dtype = model.emb.weight.dtype
    model.requires_grad_(False)
    init = init or {}
    for name in modules:
        linear = model.get_submodule(name)
        mine = {s: init[f"{name}.{s}"] for s in method.suffixes if f"{name}.{s}" in init}
        _set_module(model, name, method.wrap(linear, cfg, mine))
    method.prepare(model, cfg, layers)
    if cfg.quant != "none":
        from rwkv_tune.quant import quantize_layer

        for name in targets:
            layer = model.get_submodule(name)
            if not isinstance(layer, AdaptedLinear):
                layer = AdaptedLinear(layer)
                _set_module(model, name, layer)
            quantize_layer(layer, cfg.quant)
    for name, param in model.named_parameters():
        if is_part(name, cfg.parts, layers):
            param.requires_grad_(True)
    model.peft_info = PeftInfo(cfg, fp, spec, dtype, tuple(modules), layers)
    return trainable_parameters(model)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter that requires grad (the frozen and quantized base is excluded)."""
    return [p for p in model.parameters() if p.requires_grad]


def _group_of(name: str, model: nn.Module) -> str:
    module, _, leaf = name.rpartition(".")
    try:
        if isinstance(model.get_submodule(module), AdaptedLinear) and leaf != "weight":
            return "adapter"
    except AttributeError:
        pass
    if name.endswith("att.time_state"):
        return "state"
    return "dense"


def param_groups(model: nn.Module) -> list[dict[str, Any]]:
    """Trainable parameters by kind: 'adapter' (Linear adapters), 'state' (time_state), 'dense' (train_parts, full)."""
    groups: dict[str, list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault(_group_of(name, model), []).append(p)
    return [{"name": k, "params": v} for k, v in groups.items()]


def trainable_summary(model: nn.Module) -> dict[str, Any]:
    """Trainable vs total parameter counts, % of the base model, per group, and how many are quantized."""
    trainable = {g["name"]: sum(p.numel() for p in g["params"]) for g in param_groups(model)}
    n_trainable = sum(trainable.values())
    quantized = sum(m.qweight.numel for m in model.modules() if isinstance(m, AdaptedLinear) and m.qweight is not None)
    total = sum(p.numel() for p in model.parameters()) + quantized
    base = getattr(model.spec, "params", 0) or total - n_trainable
    return {"trainable": n_trainable, "total": total, "base_params": base, "quantized": quantized,
            "percent": 100.0 * n_trainable / max(1, base), "by_group": trainable}


def count_trainable(spec: ModelSpec, cfg: PeftConfig | dict[str, Any]) -> dict[str, int]:
    """The trainable parameter count from the formulas alone (no model): adapter, dense parts, total."""
    cfg = cfg if isinstance(cfg, PeftConfig) else PeftConfig.from_dict(cfg)
    method = get_method(cfg.name)
    shapes = spec.expected_shapes()
    layers = parse_layers(cfg.layers, spec.n_layer) or tuple(range(spec.n_layer))
    linears = linear_shapes(spec)
    adapter = sum(method.count(cfg, *linears[m]) for m in target_modules(spec, cfg)) if method.suffixes else 0
    if cfg.name == "state":
        adapter = len(layers) * spec.n_head * spec.head_size ** 2
    dense = sum(prod(shape) for name, shape in shapes.items()
                if cfg.name == "full" or is_part(name, cfg.parts, layers))
    return {"adapter": adapter, "dense": dense, "total": adapter + dense}
