"""Our adapter file: `Adapter` (tensors + the metadata that makes the file self-describing) and its reader.

The file is safetensors; its keys are official names plus a suffix (`blocks.3.att.key.lora_A`,
`….init_lora_A` for PiSSA's saved init, `….miss`), or whole official tensors for dense parts
(`blocks.3.ln1.weight`, `blocks.3.att.time_state`). Its metadata names the method and every
hyper-parameter, so merging never asks for (or guesses) alpha.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rwkv_tune.checkpoint import _check_file
from rwkv_tune.errors import ModelFileError
from rwkv_tune.peft.config import PeftConfig

FORMAT = "rwkv-tune-adapter"
FORMAT_VERSION = "1"


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


def read_adapter(path: str | Path) -> Adapter:
    """Read one of our adapter files (`.safetensors` with rwkv-tune metadata)."""
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
