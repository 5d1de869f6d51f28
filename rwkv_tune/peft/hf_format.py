"""Hugging Face `peft` adapter folders (`adapter_config.json` + `adapter_model.safetensors`) as our `Adapter`.

This is what RWKV-PEFT writes today (its G2 trainer wraps the model with HF `peft`) and what
`save_pretrained` writes for any module tree with the official RWKV names. Keys are
`base_model.model.<official module>.<tensor>`; the method and its numbers are in the JSON:
- LORA: `X.lora_A.weight` [r, in], `X.lora_B.weight` [out, r]; scale lora_alpha/r, or
  lora_alpha/√r with `use_rslora`; per-module `rank_pattern`/`alpha_pattern` override r/alpha;
  `use_dora` adds `X.lora_magnitude_vector` [out] (our `lora_magnitude`, `extra: {dora: true}`).
- ADALORA: `X.lora_A` [r, in], `X.lora_E` [r, 1], `X.lora_B` [out, r]; ΔW = B·(A⊙E)·s/(ranknum + 1e-5)
  with s = lora_alpha (init_r when 0) and ranknum = init_r (peft keeps it when it prunes ranks; not saved).
- MISS: `X.miss_block`, bone [r, out] (init_weights true/false), bat [out/r, r, r] ("bat"), mini [r, mini_r].
Adapters whose modules differ in rank or scale (rank_pattern, alpha_pattern, AdaLoRA) become one
LoRA of the largest rank with the scale folded into B and zero-padded ranks: the same ΔW exactly.
Nothing is asked that the folder records. Writing (`output.export: peft`) is in `hf_export.py`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from rwkv_tune.errors import ConfigError, ModelFileError
from rwkv_tune.peft.adapter_file import Adapter
from rwkv_tune.peft.config import ALL_TARGETS, PeftConfig

CONFIG_NAME = "adapter_config.json"
WEIGHT_NAMES = ("adapter_model.safetensors", "adapter_model.bin")
HF_PREFIX = "base_model.model."
READ_TYPES = ("LORA", "ADALORA", "MISS")
META_KEY = "rwkv_tune"  # our base fingerprint/spec, in the safetensors metadata peft itself ignores
_MODULE = re.compile(r"^blocks\.(\d+)\.(att|ffn)\.(\w+)$")
_ADALORA_EPS = 1e-5  # peft divides by ranknum + 1e-5


def hf_folder(path: str | Path) -> Path | None:
    """The HF peft adapter folder `path` is or names (a folder, or its adapter_model.* file); else None."""
    path = Path(path)
    if path.is_dir():
        return path if (path / CONFIG_NAME).is_file() or any((path / n).is_file() for n in WEIGHT_NAMES) else None
    if path.name in WEIGHT_NAMES or path.name == CONFIG_NAME:
        return path.parent
    return None


def has_hf_keys(keys: Any) -> bool:
    """True if a tensor file's keys look like HF peft's (`base_model.model.…`)."""
    return any(str(k).startswith(HF_PREFIX) for k in keys)


def read_hf_config(folder: Path) -> dict[str, Any]:
    """adapter_config.json as a dict; refuse a folder without one."""
    config = folder / CONFIG_NAME
    if not config.is_file():
        raise ModelFileError(f"{folder} has Hugging Face peft adapter weights but no {CONFIG_NAME} (it records the "
                             "method, r and alpha)", "Pass the whole folder that peft's save_pretrained wrote.")
    try:
        raw = json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raw = None
    if not isinstance(raw, dict):
        raise ModelFileError(f"{config} is not a JSON object", "Re-save the adapter with peft's save_pretrained.")
    return raw


def _weights(folder: Path, given: Path | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The adapter tensors and safetensors metadata: the file the user named, else the folder's adapter_model.*."""
    named = given is not None and given.is_file() and given.name != CONFIG_NAME
    candidates = [given] if named else [folder / n for n in WEIGHT_NAMES]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        raise ModelFileError(f"{folder} has {CONFIG_NAME} but no {WEIGHT_NAMES[0]}",
                             "Copy the adapter weights next to the config.")
    if path.suffix != ".safetensors":
        from rwkv_tune.checkpoint import load_state_dict

        return load_state_dict(path), {}
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path} is not a readable safetensors file ({str(exc)[:120]})",
                             "The file may be truncated; re-save it.") from None


def hf_kind(raw: Mapping[str, Any]) -> str:
    """'LORA', 'ADALORA', 'MISS' (read), or whatever peft_type the folder names (refused by the reader)."""
    return str(raw.get("peft_type") or "unknown").upper()


def _refuse_type(folder: Path, kind: str) -> ModelFileError:
    return ModelFileError(f"{folder} is a Hugging Face peft {kind} adapter; rwkv-tune reads LORA, ADALORA and MISS "
                          "(a weight update it can fold into the model)",
                          "Merge it with peft itself (merge_and_unload), or train LoRA/MiSS.")


def read_hf_adapter(path: str | Path, *, alpha: float | None = None, r: int | None = None,
                    pissa_init: Any = None) -> Adapter:
    """An HF peft adapter folder (or its adapter_model.safetensors) as an Adapter; flags it records are refused."""
    folder = hf_folder(path) or Path(path).parent
    raw = read_hf_config(folder)
    kind = hf_kind(raw)
    if kind not in READ_TYPES:
        raise _refuse_type(folder, kind)
    for flag, value in (("--lora-alpha", alpha), ("--r", r), ("--pissa-init", pissa_init)):
        if value is not None:
            recorded = {"ADALORA": "init_r and lora_alpha", "MISS": "r (MiSS has no alpha)"}.get(kind, "r and alpha")
            raise ConfigError(f"{flag} does not apply: {folder} is a Hugging Face peft {kind} adapter whose "
                              f"{CONFIG_NAME} records its {recorded}", f"Drop {flag}.")
    for key in ("fan_in_fan_out", "lora_bias", *(("use_dora",) if kind == "ADALORA" else ())):
        if raw.get(key) is True:
            raise ModelFileError(f"{folder} is a {kind} adapter with {key} = true, which rwkv-tune does not fold "
                                 "(only LoRA, rsLoRA, DoRA, AdaLoRA and MiSS updates)",
                                 "Merge it with peft itself (merge_and_unload).")
    if raw.get("bias", "none") != "none":
        raise ModelFileError(f"{folder} trains biases (bias = {raw['bias']!r}); RWKV Linear layers have none",
                             "Train with bias: none.")
    tensors, meta = _weights(folder, Path(path))
    if tensors and not has_hf_keys(tensors):
        raise ModelFileError(f"{folder} has {CONFIG_NAME} but its tensors are not named base_model.model.* "
                             f"(e.g. '{next(iter(tensors))}')", "Re-save the adapter with peft's save_pretrained.")
    modules = _group(tensors, folder)
    if kind == "MISS":
        config, out = _miss(raw, modules, folder)
    else:
        config, out = _lora_like(raw, modules, kind, folder)
    extra = _our_metadata(meta)
    notes = [f"read {folder} as a Hugging Face peft {kind} adapter (peft {raw.get('peft_version', '?')})"]
    if not extra.get("base_fingerprint"):
        notes[0] += "; no base fingerprint recorded, so the base is not checked"
    return Adapter(out, config, extra.get("base_fingerprint") or None, extra.get("base_spec") or None,
                   extra.get("model_dtype", "float32"), extra.get("tool_version", ""), source="hf-peft", notes=notes)


def _our_metadata(meta: Mapping[str, str]) -> dict[str, Any]:
    try:
        value = json.loads(meta.get(META_KEY) or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _group(tensors: Mapping[str, torch.Tensor], folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    """{official module: {tensor name without '.weight': tensor}}; refuse a key outside the adaptable Linears."""
    from rwkv_tune.spec import strip_wrapper_prefix

    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name = strip_wrapper_prefix(key[len(HF_PREFIX):]).removesuffix(".weight")
        name = name.removeprefix("model.") if name.startswith("model.blocks.") else name  # a wrapped RWKV
        module, _, part = name.rpartition(".")
        m = _MODULE.match(module)
        if not m or f"{m.group(2)}.{m.group(3)}" not in ALL_TARGETS:
            raise ModelFileError(f"{folder} adapts '{module or name}', which is not an RWKV att/ffn Linear "
                                 f"(key '{key}')", "rwkv-tune reads adapters on blocks.N.att.*/blocks.N.ffn.* only.")
        modules.setdefault(module, {})[part] = value.float() if value.is_floating_point() else value
    if not modules:
        raise ModelFileError(f"{folder} holds no adapter tensors", "Re-save the adapter with peft's save_pretrained.")
    return modules


def _scope(modules: Mapping[str, Any]) -> dict[str, Any]:
    names = [_MODULE.match(m) for m in modules]
    return {"targets": sorted({f"{m.group(2)}.{m.group(3)}" for m in names if m}),
            "layers": sorted({int(m.group(1)) for m in names if m}), "train_parts": []}


def _pattern(raw: Mapping[str, Any], key: str, module: str, default: Any) -> Any:
    """peft's rank_pattern/alpha_pattern lookup: the first key (a regex) matching the module name or a dotted tail."""
    for pattern, value in (raw.get(key) or {}).items():
        try:
            if re.match(rf"(.*\.)?({pattern})$", module):
                return value
        except re.error:
            raise ModelFileError(f"{CONFIG_NAME} has {key} key {pattern!r}, which is not a regular expression",
                                 "Re-save the adapter with peft's save_pretrained.") from None
    return default


def _need(parts: Mapping[str, torch.Tensor], names: tuple[str, ...], module: str, folder: Path) -> None:
    for name in names:
        if name not in parts:
            raise ModelFileError(f"{folder} is missing '{module}.{name}'", "The adapter is incomplete; re-save it.")
    extra = sorted(set(parts) - set(names))
    if extra:
        raise ModelFileError(f"{folder} has '{module}.{extra[0]}', which its method does not use",
                             "rwkv-tune folds plain LoRA/AdaLoRA/MiSS tensors only.")


def _lora_like(raw: Mapping[str, Any], modules: dict[str, dict[str, torch.Tensor]], kind: str,
               folder: Path) -> tuple[PeftConfig, dict[str, torch.Tensor]]:
    """LoRA or AdaLoRA → our LoRA: exact r/alpha/rslora when uniform, else the scale folded into B."""
    dora = kind == "LORA" and bool(raw.get("use_dora"))
    names = ("lora_A", "lora_B", "lora_E") if kind == "ADALORA" else ("lora_A", "lora_B")
    names += ("lora_magnitude_vector",) if dora else ()
    factors: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {}
    rslora = bool(raw.get("use_rslora")) and kind == "LORA"
    for module, parts in modules.items():
        _need(parts, names, module, folder)
        a, b = parts["lora_A"], parts["lora_B"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise ModelFileError(f"{folder}: '{module}' has lora_A {list(a.shape)} and lora_B {list(b.shape)}, which "
                                 "do not form B·A", "The adapter is corrupt; re-save it.")
        if kind == "ADALORA":
            init_r = int(raw.get("init_r") or raw.get("r") or a.shape[0])
            alpha = float(raw.get("lora_alpha") or 0) or float(init_r)
            factors[module] = (a * parts["lora_E"], b, alpha / (init_r + _ADALORA_EPS))
        else:
            rank = int(_pattern(raw, "rank_pattern", module, raw.get("r", a.shape[0])))
            alpha = float(_pattern(raw, "alpha_pattern", module, raw.get("lora_alpha", 8)))
            if rank != a.shape[0]:
                raise ModelFileError(f"{folder}: '{module}.lora_A' has rank {a.shape[0]}, but {CONFIG_NAME} says "
                                     f"r = {rank}", "The adapter does not match its config; re-save it.")
            factors[module] = (a, b, alpha / (rank ** 0.5 if rslora else rank))
    ranks = {a.shape[0] for a, _, _ in factors.values()}
    scales = {s for _, _, s in factors.values()}
    out: dict[str, torch.Tensor] = {}
    if dora:  # DoRA: the magnitude rescales W + ΔW row by row (rwkv_tune.peft.lora.dora_weight)
        out.update({f"{m}.lora_magnitude": parts["lora_magnitude_vector"] for m, parts in modules.items()})
    if kind == "LORA" and len(ranks) == 1 and len(scales) == 1:
        rank = ranks.pop()
        alpha = float(_pattern(raw, "alpha_pattern", next(iter(factors)), raw.get("lora_alpha", 8)))
        for module, (a, b, _) in factors.items():
            out[f"{module}.lora_A"], out[f"{module}.lora_B"] = a, b
        cfg = {"name": "lora", "r": rank, "alpha": alpha, "rslora": rslora}
    else:  # one rank, scale 1 (alpha = r): B carries each module's own scale, zero rows/columns pad the rank
        rank = max(ranks)
        for module, (a, b, scale) in factors.items():
            pad = rank - a.shape[0]
            out[f"{module}.lora_A"] = torch.cat([a, a.new_zeros(pad, a.shape[1])])
            out[f"{module}.lora_B"] = torch.cat([b * scale, b.new_zeros(b.shape[0], pad)], dim=1)
        cfg = {"name": "lora", "r": rank, "alpha": float(rank), "rslora": False}
    extra = {"extra": {"dora": True}} if dora else {}
    return PeftConfig.from_dict({**cfg, **_scope(modules), **extra}), out


def _miss(raw: Mapping[str, Any], modules: dict[str, dict[str, torch.Tensor]],
          folder: Path) -> tuple[PeftConfig, dict[str, torch.Tensor]]:
    init = raw.get("init_weights", True)
    mode = "bat" if init == "bat" else "mini" if init == "mini" else "bone"
    rank = int(raw.get("r", 64))
    out: dict[str, torch.Tensor] = {}
    for module, parts in modules.items():
        _need(parts, ("miss_block",), module, folder)
        out[f"{module}.miss"] = parts["miss_block"]
    cfg = {"name": "miss", "r": rank, "mode": mode, **_scope(modules)}
    if mode == "mini":
        cfg["mini_r"] = int(raw.get("mini_r", 1))
    return PeftConfig.from_dict(cfg), out


def describe_hf(path: str | Path) -> dict[str, Any]:
    """What an HF peft adapter folder is, from its config and key names (for `inspect`; no tensor math)."""
    folder = hf_folder(path) or Path(path)
    raw = read_hf_config(folder)
    kind = hf_kind(raw)
    info: dict[str, Any] = {"tool": f"Hugging Face peft {raw.get('peft_version', '?')}", "format": "hf-peft",
                            "peft_type": kind, "path": str(folder)}
    if kind not in READ_TYPES:
        info["readable"] = False
        return info
    adapter = read_hf_adapter(folder)
    method = "adalora" if kind == "ADALORA" else adapter.config.name
    info.update(summarize(adapter), method=method, readable=True)
    if kind == "ADALORA":  # scale alpha/ranknum, ranknum = init_r; ranks pruned per module are in the tensors
        init_r = int(raw.get("init_r") or adapter.config.r)
        alpha = float(raw.get("lora_alpha") or 0) or float(init_r)
        info.update(r=init_r, alpha=alpha, scale=alpha / init_r, target_r=raw.get("target_r"))
        info.pop("rslora", None)
    elif kind == "LORA":
        r, alpha, rslora = int(raw.get("r", 8)), float(raw.get("lora_alpha", 8)), bool(raw.get("use_rslora"))
        info.update(r=r, alpha=alpha, rslora=rslora, scale=alpha / (r ** 0.5 if rslora else r))
        if raw.get("use_dora"):
            info.update(method="lora (DoRA)", dora=True)
        if raw.get("rank_pattern") or raw.get("alpha_pattern"):
            info["patterns"] = {"rank_pattern": raw.get("rank_pattern"), "alpha_pattern": raw.get("alpha_pattern")}
    return info


def summarize(adapter: Adapter) -> dict[str, Any]:
    """Method, rank, alpha, targets, layers and base fingerprint of any Adapter (for `inspect`)."""
    cfg = adapter.config
    info: dict[str, Any] = {"method": cfg.name, "r": cfg.r, "targets": list(cfg.targets or []),
                            "layers": list(cfg.layers) if cfg.layers is not None else "all",
                            "base_fingerprint": adapter.base_fingerprint, "tensors": len(adapter.tensors)}
    if cfg.name == "lora":
        info.update(alpha=cfg.alpha, rslora=cfg.rslora, scale=cfg.scale)
    if cfg.name == "miss":
        info["mode"] = cfg.mode
    if cfg.quant != "none":
        info["quant"] = cfg.quant
    return info
