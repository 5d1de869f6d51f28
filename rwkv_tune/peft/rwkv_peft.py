"""Reading adapters for merge: ours (safetensors with metadata) or an RWKV-PEFT checkpoint (rwkv-N.pth).

RWKV-PEFT files carry no metadata, so the kind comes from the keys: `*.lora_A/B` (LoRA, or PiSSA
with `init_pissa.pth`), `*.disha` (MiSS bone when 2-D, bat when 3-D), `*.time_state` (state), and
any other key must be a base tensor that replaces the base's (train_parts). LoRA's alpha is not
recorded by RWKV-PEFT, so the caller passes it (`--lora-alpha`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from rwkv_tune.errors import ConfigError, ModelFileError
from rwkv_tune.peft.adapter import Adapter, read_adapter
from rwkv_tune.peft.config import PeftConfig

_PREFIXES = ("_forward_module.", "module.", "model.")


def strip_prefix(key: str) -> str:
    """A key without a training wrapper's prefix (`model.`, `module.`, `_forward_module.`)."""
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def read_rwkv_peft(tensors: Mapping[str, torch.Tensor], *, source: str = "adapter", alpha: float | None = None,
                   r: int | None = None, pissa_init: Mapping[str, torch.Tensor] | None = None) -> Adapter:
    """An RWKV-PEFT checkpoint (rwkv-N.pth) as an Adapter; the kind comes from its keys, alpha from the caller.

    `*.lora_A/B` → LoRA (needs alpha; RWKV-PEFT does not save it) or PiSSA (with init_pissa.pth);
    `*.disha` → MiSS bone (2-D) or bat (3-D, indexed by input block); `*.time_state` → state;
    any other key must be a base tensor (train_parts) and replaces it.
    """
    sd = {strip_prefix(k): v for k, v in tensors.items()}
    lora = [k for k in sd if k.endswith((".lora_A", ".lora_B"))]
    disha = [k for k in sd if k.endswith(".disha")]
    if lora and disha:
        raise ModelFileError(f"{source} mixes LoRA ('{lora[0]}') and DiSHA ('{disha[0]}') keys",
                             "Pass one adapter at a time.")
    if alpha is not None and not lora:
        raise ConfigError(f"--lora-alpha {alpha} applies only to LoRA checkpoints, and {source} is not one",
                          "Drop --lora-alpha.")
    notes = [f"read {source} as an RWKV-PEFT checkpoint (no metadata: base fingerprint not checked)"]
    extra: dict[str, Any] = {}
    if lora:
        ranks = {tuple(sd[k].shape)[0] for k in lora if k.endswith(".lora_A")}
        if len(ranks) != 1:
            raise ModelFileError(f"{source} has lora_A of different ranks {sorted(ranks)}", "Is the file corrupt?")
        rank = ranks.pop()
        if r is not None and r != rank:
            raise ConfigError(f"--r {r} does not match {source}, whose lora_A have rank {rank}", f"Use --r {rank}.")
        if pissa_init is not None:
            if alpha is not None:
                raise ConfigError(f"--lora-alpha {alpha} does not apply to PiSSA (its scale is 1)",
                                  "Drop --lora-alpha.")
            init = {strip_prefix(k): v for k, v in pissa_init.items()}
            bad = [k for k in init if not k.endswith((".init_lora_A", ".init_lora_B"))]
            if bad:
                raise ModelFileError(f"the PiSSA init file has an unexpected key '{bad[0]}'",
                                     "Pass the init_pissa.pth written by the same RWKV-PEFT run.")
            missing = [k for k in lora if k.replace(".lora_", ".init_lora_") not in init]
            if missing:
                raise ModelFileError(f"the PiSSA init file has no '{missing[0].replace('.lora_', '.init_lora_')}'",
                                     "Pass the init_pissa.pth written by the same RWKV-PEFT run.")
            sd.update(init)
            name, cfg_extra = "pissa", {}
        else:
            if alpha is None:
                raise ConfigError(f"{source} is an RWKV-PEFT LoRA checkpoint, which does not record lora_alpha",
                                  "Pass --lora-alpha with the lora_alpha you trained with (RWKV-PEFT's training default "
                                  "is 32; its merge script assumed 16), or --pissa-init init_pissa.pth for PiSSA.")
            name, cfg_extra = "lora", {"alpha": float(alpha)}
        modules = [k.rpartition(".")[0] for k in lora]
    elif disha:
        ndims = {sd[k].ndim for k in disha}
        if ndims - {2, 3} or len(ndims) != 1:
            raise ModelFileError(f"{source} has DiSHA tensors of rank {sorted(ndims)}", "Expected all 2-D or all 3-D.")
        mode = "bone" if ndims == {2} else "bat"
        rank = sd[disha[0]].shape[0] if mode == "bone" else sd[disha[0]].shape[1]
        if mode == "bat":
            extra = {"bat_index": "in"}  # RWKV-PEFT's G1 bat: one r×r block per input block
        for k in disha:
            sd[k[: -len("disha")] + "miss"] = sd.pop(k)
        name, cfg_extra = "miss", {"mode": mode}
        modules = [k.rpartition(".")[0] for k in disha]
    else:
        name = "state" if any(k.endswith(".att.time_state") for k in sd) else "full"
        rank, cfg_extra, modules = 1, {}, []
    raw: dict[str, Any] = {"name": name, "r": rank, **cfg_extra, "train_parts": [], "extra": extra}
    odd = [m for m in modules if not re.match(r"^blocks\.\d+\.(att|ffn)\.\w+$", m)]
    if odd:
        raise ModelFileError(f"{source} adapts '{odd[0]}', which is not an RWKV att/ffn Linear",
                             "Pass an RWKV-PEFT rwkv-N.pth of an RWKV model.")
    if modules:
        raw["targets"] = sorted({".".join(m.split(".")[2:4]) for m in modules})
        raw["layers"] = sorted({int(m.split(".")[1]) for m in modules})
    try:
        config = PeftConfig.from_dict(raw)
    except ConfigError as exc:
        raise ModelFileError(f"{source} does not look like an RWKV-PEFT adapter ({exc.message})",
                             "Check the file.") from None
    return Adapter(sd, config, source="rwkv-peft", notes=notes)


def load_any_adapter(adapter: Any, *, alpha: float | None = None, r: int | None = None,
                     pissa_init: Any = None) -> Adapter:
    """Ours (safetensors with metadata, or an Adapter) or RWKV-PEFT's (.pth / plain tensors + flags)."""
    from rwkv_tune.checkpoint import load_state_dict

    init = load_state_dict(pissa_init) if isinstance(pissa_init, (str, Path)) else pissa_init
    if isinstance(adapter, (str, Path)) and is_hf_adapter(Path(adapter)):
        from rwkv_tune.peft.hf_format import read_hf_adapter

        return read_hf_adapter(adapter, alpha=alpha, r=r, pissa_init=pissa_init)
    if isinstance(adapter, Adapter):
        ours = adapter
    elif isinstance(adapter, (str, Path)) and Path(adapter).suffix == ".safetensors" and has_our_metadata(adapter):
        ours = read_adapter(adapter)
    else:
        tensors = load_state_dict(adapter) if isinstance(adapter, (str, Path)) else dict(adapter)
        source = str(adapter) if isinstance(adapter, (str, Path)) else "adapter"
        _refuse_foreign(tensors, source)
        return read_rwkv_peft(tensors, source=source, alpha=alpha, r=r, pissa_init=init)
    cfg = ours.config
    if alpha is not None and (cfg.name != "lora" or float(alpha) != cfg.alpha):
        recorded = f"alpha {cfg.alpha:g}" if cfg.name == "lora" else f"method {cfg.name} (no alpha)"
        raise ConfigError(f"--lora-alpha {alpha:g} conflicts with the adapter's recorded {recorded}",
                          "Drop --lora-alpha: it is only for RWKV-PEFT files, which do not record it.")
    if r is not None and r != cfg.r:
        raise ConfigError(f"--r {r} conflicts with the adapter's recorded r = {cfg.r}", "Drop --r.")
    if init is not None and cfg.name != "pissa":
        raise ConfigError(f"--pissa-init was given, but the adapter is method {cfg.name}", "Drop --pissa-init.")
    return ours


def has_our_metadata(path: str | Path) -> bool:
    from rwkv_tune.checkpoint import _safetensors_header

    meta = _safetensors_header(Path(path)).get("__metadata__") or {}
    return meta.get("format") == "rwkv-tune-adapter"




_RWKV_KEY = re.compile(r"^(blocks\.\d+\.|emb\.|head\.|ln_out\.)")


def is_hf_adapter(path: Path) -> bool:
    """A Hugging Face peft adapter: its folder, a file in it, or a safetensors file named like one."""
    from rwkv_tune.peft.hf_format import has_hf_keys, hf_folder

    if hf_folder(path) is not None:
        return True
    if path.suffix == ".safetensors" and path.is_file() and not has_our_metadata(path):
        from rwkv_tune.checkpoint import _safetensors_header

        return has_hf_keys(_safetensors_header(path))
    return False


def _refuse_foreign(tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse, saying what it is, a tensor file that is no adapter of ours, RWKV-PEFT's or HF peft's."""
    from rwkv_tune.peft.hf_format import has_hf_keys

    if has_hf_keys(tensors):
        raise ModelFileError(f"{source} has Hugging Face peft keys (base_model.model.*) but no adapter_config.json "
                             "beside it", "Pass the folder that peft's save_pretrained wrote.")
    keys = [strip_prefix(k) for k in tensors]
    if not keys or not any(_RWKV_KEY.match(k) for k in keys):
        first = f", e.g. '{keys[0]}'" if keys else ""
        raise ModelFileError(f"{source} is not an adapter: a file of {len(keys)} tensors{first}, with no rwkv-tune "
                             "metadata, no Hugging Face peft config and no RWKV tensor names",
                             "Pass an rwkv-tune adapter.safetensors, an RWKV-PEFT rwkv-N.pth or a peft adapter folder.")
