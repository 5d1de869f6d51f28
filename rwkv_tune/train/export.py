"""`output.export`: also write the adapter in another tool's format at every checkpoint.

`rwkv-peft`: RWKV-PEFT (G1) keeps adapters as plain `torch.save` dicts named `rwkv-N.pth`, N the
0-based epoch, with official key names: `X.lora_A`/`X.lora_B` (LoRA and PiSSA), `X.disha` (Bone,
[r, out]), `blocks.i.att.time_state`, and the dense train_parts tensors. PiSSA's init goes to
`init_pissa.pth` with a `model.` prefix, as its merge script expects. Its merge scripts take an
integer `--lora_alpha` and scale by alpha/r; when our scale (alpha/r, or alpha/√r with rsLoRA) is
not an integer over r, it is folded into lora_B and the command says `--lora_alpha r` (scale 1).
MERGE.txt beside the files gives the exact command for the method.

`peft`: a Hugging Face peft folder (`rwkv_tune.peft.hf_export`), replaced at each checkpoint.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import torch

from rwkv_tune.checkpoint import atomic_path
from rwkv_tune.peft.config import PeftConfig
from rwkv_tune.peft.export_rules import check_export


def lora_alpha_for_rwkv_peft(cfg: PeftConfig) -> tuple[int, float]:
    """(the integer --lora_alpha RWKV-PEFT's merge gets, the factor lora_B is multiplied by for it)."""
    alpha = cfg.scale * cfg.r  # what RWKV-PEFT's alpha/r scaling needs
    if abs(alpha - round(alpha)) < 1e-9 and round(alpha) > 0:
        return int(round(alpha)), 1.0
    return cfg.r, cfg.scale  # alpha = r: scale 1, with ours folded into B


def to_rwkv_peft(tensors: dict[str, torch.Tensor], cfg: PeftConfig) -> tuple[dict, dict]:
    """(adapter dict, PiSSA init dict) in RWKV-PEFT's key format, B scaled as `lora_alpha_for_rwkv_peft` says."""
    check_export("rwkv-peft", cfg.name, cfg.mode)
    fold = lora_alpha_for_rwkv_peft(cfg)[1] if cfg.name == "lora" else 1.0
    adapter, init = {}, {}
    for key, value in tensors.items():
        if key.endswith((".init_lora_A", ".init_lora_B")):
            init["model." + key] = value.float()
        elif key.endswith(".miss"):
            adapter[key[: -len(".miss")] + ".disha"] = value
        elif key.endswith(".lora_B") and fold != 1.0:
            adapter[key] = (value.float() * fold).to(value.dtype)
        else:
            adapter[key] = value
    return adapter, init


def merge_command(cfg: PeftConfig, checkpoint: Path, base: str, init: Path | None) -> tuple[str, str]:
    """(RWKV-PEFT's merge command, the rwkv-tune one) for this method, with the exact flags."""
    q = shlex.quote
    ckpt, out = q(str(checkpoint)), "merged.pth"
    quant = f" --quant {cfg.quant}" if cfg.quant in ("nf4", "fp4") else ""
    ours = f"rwkv-tune merge --base {q(base)} --adapter {ckpt} --out {out}"
    if cfg.name == "lora":
        alpha = lora_alpha_for_rwkv_peft(cfg)[0]
        return (f"python merge/merge.py --type lora --base_model {q(base)} --lora_checkpoint {ckpt} --output {out} "
                f"--lora_alpha {alpha}{quant}", f"{ours} --lora-alpha {alpha}")
    if cfg.name == "pissa":
        init_arg = q(str(init))
        return (f"python merge/merge.py --type pissa --base_model {q(base)} --lora_checkpoint {ckpt} "
                f"--lora_init {init_arg} --output {out}{quant}", f"{ours} --pissa-init {init_arg}")
    if cfg.name == "miss":
        return (f"python merge/merge_disha.py --base_model {q(base)} --peft_checkpoint {ckpt} --output {out}{quant}",
                ours)
    if cfg.name == "state":
        return f"python merge/merge_state.py --base_model {q(base)} --state_checkpoint {ckpt} --output {out}", ours
    # full / dense parts only: merge.py copies every key of the checkpoint over the base
    return f"python merge/merge.py --type lora --base_model {q(base)} --lora_checkpoint {ckpt} --output {out}", ours


def _merge_note(cfg: PeftConfig, commands: tuple[str, str]) -> str:
    lines = [f"# {cfg.name} adapter, written by rwkv-tune for RWKV-PEFT's merge scripts (run from its repository):"]
    if cfg.name == "lora":
        alpha, fold = lora_alpha_for_rwkv_peft(cfg)
        how = f"alpha/√r = {cfg.alpha:g}/√{cfg.r}" if cfg.rslora else f"alpha/r = {cfg.alpha:g}/{cfg.r}"
        lines.append(f"# our scale {how} = {cfg.scale:.6g}; " + (
            f"RWKV-PEFT's --lora_alpha is an integer, so that scale is folded into lora_B and --lora_alpha {alpha} "
            "(scale 1) merges it exactly" if fold != 1.0 else f"RWKV-PEFT's alpha/r with --lora_alpha {alpha} is it"))
    if cfg.quant != "none":
        lines.append(f"# trained on a {cfg.quant} base" + ("" if cfg.quant in ("nf4", "fp4") else
                     "; RWKV-PEFT's int8 merge no longer matches it, rwkv-tune merge does"))
    lines += [commands[0], "# or:", commands[1]]
    return "\n".join(lines) + "\n"


def export_rwkv_peft(adapter_path: Path, out_dir: Path, index: int, *, base: str = "BASE.pth") -> Path:
    """Write out_dir/rwkv-{index}.pth (index 0 first, as RWKV-PEFT), init_pissa.pth and MERGE.txt."""
    from rwkv_tune.peft.adapter_file import read_adapter

    adapter = read_adapter(adapter_path)
    cfg = adapter.config
    tensors, init = to_rwkv_peft(adapter.tensors, cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"rwkv-{index}.pth"
    with atomic_path(target) as tmp:
        torch.save({k: v.contiguous() for k, v in tensors.items()}, tmp)
    init_path = out_dir / "init_pissa.pth" if init else None
    if init_path is not None and not init_path.exists():
        with atomic_path(init_path) as tmp:
            torch.save(init, tmp)
    note = _merge_note(cfg, merge_command(cfg, target.resolve(), base,
                                          init_path.resolve() if init_path is not None else None))
    with atomic_path(out_dir / "MERGE.txt") as tmp:
        tmp.write_text(note, encoding="utf-8")
    return target


def export_checkpoint(preset, checkpoint: Path, step: int, run_root: Path) -> None:
    """Write a checkpoint's adapter in the `output.export` format (gguf happens after the merge, not here)."""
    export, base = preset.output.export, str(Path(preset.model.path).resolve())
    if export == "rwkv-peft":  # rwkv-N.pth: N is the 0-based epoch this step belongs to, as in RWKV-PEFT
        index = max(0, (step - 1) // preset.train.epoch_steps)
        export_rwkv_peft(checkpoint / "adapter.safetensors", run_root / "rwkv-peft", index, base=base)
    elif export == "peft":
        from rwkv_tune.peft.hf_export import export_peft

        export_peft(checkpoint / "adapter.safetensors", run_root / "peft", base=base)
