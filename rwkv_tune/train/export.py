"""`output.export: rwkv-peft`: also write RWKV-PEFT-style adapter files for people who merge with its tools.

RWKV-PEFT (G1) keeps adapters as plain `torch.save` dicts named `rwkv-N.pth` with official key names:
`X.lora_A`/`X.lora_B` (LoRA and PiSSA), `X.disha` (Bone, [r, out]), `blocks.i.att.time_state`, and the
dense train_parts tensors. PiSSA's init goes to `init_pissa.pth` with a `model.` prefix, as its merge
script expects. Its merge scripts take alpha on the command line, so we write it into a note beside.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rwkv_tune.checkpoint import atomic_path
from rwkv_tune.errors import ConfigError


def to_rwkv_peft(tensors: dict[str, torch.Tensor], method: str, mode: str) -> tuple[dict, dict]:
    """(adapter dict, PiSSA init dict) in RWKV-PEFT's key format."""
    if method == "miss" and mode != "bone":
        raise ConfigError(f"output.export = rwkv-peft supports MiSS mode bone only, not {mode}",
                          "Export bone adapters, or merge with `rwkv-tune merge` instead.")
    adapter, init = {}, {}
    for key, value in tensors.items():
        if key.endswith((".init_lora_A", ".init_lora_B")):
            init["model." + key] = value.float()
        elif key.endswith(".miss"):
            adapter[key[: -len(".miss")] + ".disha"] = value
        else:
            adapter[key] = value
    return adapter, init


def peft_alpha(alpha: float, r: int, rslora: bool) -> float:
    """The alpha RWKV-PEFT's alpha/r scaling needs to reproduce ours (rsLoRA scales by alpha/sqrt(r))."""
    return alpha * r**0.5 if rslora else alpha


def export_rwkv_peft(adapter_path: Path, out_dir: Path, epoch: int) -> Path:
    """Write out_dir/rwkv-{epoch}.pth (and init_pissa.pth, alpha note) from one of our adapter files."""
    from rwkv_tune.peft.adapter_file import read_adapter

    adapter = read_adapter(adapter_path)
    cfg = adapter.config
    tensors, init = to_rwkv_peft(adapter.tensors, cfg.name, cfg.mode)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"rwkv-{epoch}.pth"
    with atomic_path(target) as tmp:
        torch.save({k: v.contiguous() for k, v in tensors.items()}, tmp)
    if init and not (out_dir / "init_pissa.pth").exists():
        with atomic_path(out_dir / "init_pissa.pth") as tmp:
            torch.save(init, tmp)
    if cfg.name == "lora":
        alpha = peft_alpha(cfg.alpha, cfg.r, cfg.rslora)
        (out_dir / "MERGE.txt").write_text(
            f"LoRA r={cfg.r} alpha={alpha:g}: pass --lora_alpha {alpha:g} to RWKV-PEFT's merge script, or run: "
            f"rwkv-tune merge --base BASE --adapter rwkv-N.pth --lora-alpha {alpha:g} --out merged.pth\n",
            encoding="utf-8")
    return target
