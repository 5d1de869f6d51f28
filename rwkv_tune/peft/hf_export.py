"""Writing our adapters for other tools: HF `peft` folders (`output.export: peft`) and the export checks.

`write_hf_adapter` writes what `peft`'s `save_pretrained` writes (adapter_config.json +
adapter_model.safetensors with `base_model.model.<official module>.<tensor>` keys), so
`PeftModel.from_pretrained` loads it onto any module tree with the official RWKV names and
`merge_and_unload()` gives our merged weights:
- LoRA/rsLoRA/DoRA: LORA with our r, alpha, use_rslora (use_dora for one read from peft).
- PiSSA: ΔW = B·A − B₀·A₀ = [B, B₀]·[A; −A₀], a LORA of rank 2r with scale 1 (lora_alpha = 2r).
- MiSS: MISS with init_weights true (bone), "bat" or "mini" (peft's bat indexes by output block, as ours).
HF folders hold adapter weights only: state tuning, full fine-tuning and dense train_parts have no
place in them, and that is refused when the preset is checked (`export_rules.check_export`).
Our base fingerprint and spec go into the safetensors metadata (peft ignores it; we read it back).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rwkv_tune.errors import ConfigError
from rwkv_tune.peft.export_rules import check_export


def hf_tensors(adapter: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(peft_type, {key: tensor} with peft's names, method fields of adapter_config.json) for one of our adapters."""
    import torch

    cfg = adapter.config
    check_export("peft", cfg.name, cfg.mode, [], cfg.quant)
    suffixes = {"lora": ("lora_A", "lora_B", "lora_magnitude"), "pissa": ("lora_A", "lora_B", "init_lora_A", "init_lora_B"),
                "miss": ("miss",)}[cfg.name]
    modules: dict[str, dict[str, Any]] = {}
    for key, value in adapter.tensors.items():
        module, _, part = key.rpartition(".")
        if part not in suffixes:
            raise ConfigError(f"the adapter has dense tensor '{key}', which a Hugging Face peft folder cannot hold",
                              "Train with method.train_parts: [] to export to peft.")
        modules.setdefault(module, {})[part] = value.detach().float().contiguous()
    out: dict[str, Any] = {}
    prefix = "base_model.model."
    if cfg.name == "miss":
        if cfg.mode == "bat" and cfg.extra.get("bat_index", "out") != "out":
            raise ConfigError("this bat adapter indexes its blocks by input (an RWKV-PEFT G1 file); peft's bat "
                              "indexes by output", "Merge it with `rwkv-tune merge` instead.")
        for module, parts in modules.items():
            out[f"{prefix}{module}.miss_block"] = parts["miss"]
        init = {"bone": True, "bat": "bat", "mini": "mini"}[cfg.mode]
        fields = {"r": cfg.r, "init_weights": init, "mini_r": cfg.mini_r, "miss_dropout": cfg.dropout}
        return "MISS", out, fields
    r, alpha = cfg.r, _number(cfg.alpha)
    for module, parts in modules.items():
        a, b = parts["lora_A"], parts["lora_B"]
        if cfg.name == "pissa":
            a = torch.cat([a, -parts["init_lora_A"]])
            b = torch.cat([b, parts["init_lora_B"]], dim=1)
        out[f"{prefix}{module}.lora_A.weight"], out[f"{prefix}{module}.lora_B.weight"] = a, b
        if "lora_magnitude" in parts:
            out[f"{prefix}{module}.lora_magnitude_vector"] = parts["lora_magnitude"]
    if cfg.name == "pissa":
        r, alpha = 2 * cfg.r, 2 * cfg.r
    fields = {"r": r, "lora_alpha": alpha, "use_rslora": cfg.rslora and cfg.name == "lora",
              "lora_dropout": cfg.dropout if cfg.name == "lora" else 0.0, "use_dora": bool(cfg.extra.get("dora")), "fan_in_fan_out": False,
              "init_lora_weights": True, "rank_pattern": {}, "alpha_pattern": {}}
    return "LORA", out, fields


def _number(x: float) -> int | float:
    return int(x) if float(x).is_integer() else float(x)


def write_hf_adapter(adapter: Any, folder: str | Path, *, base_name: str | None = None) -> Path:
    """Write `adapter` (ours) as an HF peft folder; each file atomically. Returns the folder."""
    from rwkv_tune.checkpoint import atomic_path, save_state_dict
    from rwkv_tune.peft.hf_format import CONFIG_NAME, META_KEY, WEIGHT_NAMES

    folder = Path(folder)
    kind, tensors, fields = hf_tensors(adapter)
    modules = sorted({k[len("base_model.model."):].rsplit(".", 2 if k.endswith(".weight") else 1)[0]
                      for k in tensors})
    config = {"peft_type": kind, "task_type": None, "base_model_name_or_path": base_name, "revision": None,
              "inference_mode": True, "bias": "none", "modules_to_save": None, "layers_to_transform": None,
              "layers_pattern": None, "exclude_modules": None, "target_modules": modules, **fields}
    ours = {"base_fingerprint": adapter.base_fingerprint, "base_spec": adapter.base_spec,
            "model_dtype": adapter.model_dtype, "tool_version": adapter.tool_version, "method": adapter.config.name,
            "config": adapter.config.to_dict()}
    folder.mkdir(parents=True, exist_ok=True)
    save_state_dict(tensors, folder / WEIGHT_NAMES[0], {"format": "pt", META_KEY: json.dumps(ours)})
    with atomic_path(folder / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return folder


def export_peft(adapter_path: Path, out_dir: Path, *, base: str | None = None) -> Path:
    """`output.export: peft`: write out_dir (an HF peft folder, replaced at each checkpoint) from our adapter file."""
    from rwkv_tune.peft.adapter_file import read_adapter

    return write_hf_adapter(read_adapter(adapter_path), out_dir, base_name=base)
