"""The adapter file and the pure merge: `Adapter` (tensors + metadata), save/read, base fingerprint, `merge`.

Our adapter is a safetensors file whose keys are official names plus a suffix (`blocks.3.att.key.lora_A`,
`….init_lora_A` for PiSSA's saved init, `….miss`), or whole official tensors for dense parts
(`blocks.3.ln1.weight`, `blocks.3.att.time_state`). Its metadata names the method and every
hyper-parameter, so merging never asks for (or guesses) alpha.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

import torch

from rwkv_tune.errors import ConfigError, ModelFileError
from rwkv_tune.peft.config import PeftConfig

FORMAT = "rwkv-tune-adapter"
FORMAT_VERSION = "1"
_SAMPLES = 256  # values sampled per tensor for the fingerprint


def fingerprint(state_dict: Mapping[str, torch.Tensor]) -> str:
    """A cheap identity of a base model: keys, shapes and a strided sample of values (as bf16).

    Sampling keeps it fast on 14 GB files; casting to bf16 makes it the same whether the model was
    loaded in fp32, bf16 or kept in the file's dtype.
    """
    from rwkv_tune.spec import strip_wrapper_prefix

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


@dataclass
class Adapter:
    """An adapter's tensors and what is needed to use them: method config, base identity, tool version."""

    tensors: dict[str, torch.Tensor]
    config: PeftConfig
    base_fingerprint: str | None = None
    base_spec: dict[str, Any] | None = None
    model_dtype: str = "float32"
    tool_version: str = ""
    source: str = FORMAT  # or "rwkv-peft" for an imported RWKV-PEFT checkpoint
    notes: list[str] = field(default_factory=list)

    def linear_modules(self, method: Any) -> tuple[str, ...]:
        """The Linear modules this adapter's per-Linear tensors name, in file order."""
        mods = [k.rpartition(".")[0] for k in self.tensors if k.rpartition(".")[2] in method.suffixes]
        return tuple(dict.fromkeys(mods))

    def metadata(self) -> dict[str, str]:
        """The safetensors metadata (str → str) that makes the file self-describing."""
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "method": self.config.name,
                "config": json.dumps(self.config.to_dict()), "base_fingerprint": self.base_fingerprint or "",
                "base_spec": json.dumps(self.base_spec or {}), "model_dtype": self.model_dtype,
                "tool_version": self.tool_version}

    @classmethod
    def from_metadata(cls, tensors: dict[str, torch.Tensor], meta: Mapping[str, str], source: str) -> Adapter:
        """Rebuild an Adapter from a file's tensors and metadata; refuse files that are not ours."""
        if meta.get("format") != FORMAT:
            raise ModelFileError(f"{source} has no rwkv-tune adapter metadata",
                                 "If it is an RWKV-PEFT checkpoint, merge it with `rwkv-tune merge --lora-alpha A` "
                                 "(LoRA) or `--pissa-init init_pissa.pth` (PiSSA).")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ModelFileError(f"{source} is adapter format {meta.get('format_version')!r}; this rwkv-tune reads "
                                 f"{FORMAT_VERSION}", "Upgrade rwkv-tune.")
        try:
            config = PeftConfig.from_dict(json.loads(meta["config"]))
            spec = json.loads(meta.get("base_spec") or "{}")
        except (KeyError, json.JSONDecodeError):
            raise ModelFileError(f"{source} has corrupt adapter metadata", "Re-save the adapter.") from None
        return cls(tensors, config, meta.get("base_fingerprint") or None, spec or None,
                   meta.get("model_dtype", "float32"), meta.get("tool_version", ""))


def adapter_state_dict(model: torch.nn.Module) -> Adapter:
    """The adapter of a model prepared by `apply`: its trainable tensors (plus PiSSA init) and metadata."""
    from rwkv_tune import __version__
    from rwkv_tune.peft.base import AdaptedLinear

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
    from rwkv_tune.checkpoint import save_state_dict

    target = Path(path if path is not None else path_or_cfg)
    if target.suffix != ".safetensors":
        raise ConfigError(f"adapter path {target} must end in .safetensors (it carries the method's metadata)",
                          f"Use {target.with_suffix('.safetensors').name}.")
    adapter = model if isinstance(model, Adapter) else adapter_state_dict(model)
    return save_state_dict(adapter.tensors, target, adapter.metadata())


def read_adapter(path: str | Path) -> Adapter:
    """Read one of our adapter files (`.safetensors` with rwkv-tune metadata)."""
    from rwkv_tune.checkpoint import _check_file

    path = Path(path)
    _check_file(path)
    if path.suffix != ".safetensors":
        raise ModelFileError(f"{path} is not an rwkv-tune adapter (.safetensors)",
                             "For an RWKV-PEFT rwkv-N.pth use `rwkv-tune merge` with --lora-alpha/--pissa-init.")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path} is not a readable safetensors file ({str(exc)[:120]})",
                             "The file may be truncated; re-save it.") from None
    return Adapter.from_metadata(tensors, meta, str(path))


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
    from rwkv_tune.peft import get_method

    method = get_method(adapter.config.name)
    _check_fits(base, adapter, method, *_split(adapter, method))


class Folding:
    """How an adapter changes a base model, tensor by tensor; checked against the base when made.

    Linear adapters fold into their weight in fp32 (`method.merge_weight`); dense tensors
    (train_parts, full, time_state) replace the base's; with `quant`, the targeted Linears become
    dequant(quant(W)), the weights a quantized run trained against.
    """

    def __init__(self, base: Mapping[str, torch.Tensor], adapter: Adapter, quant: str | None = None):
        from rwkv_tune.peft import get_method
        from rwkv_tune.peft.base import target_modules
        from rwkv_tune.spec import detect

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
