"""What an adapter file or folder is, for `rwkv-tune inspect`: tool, method, rank, alpha, targets, base fingerprint.

Three kinds are told apart without being asked: ours (safetensors with rwkv-tune metadata), a
Hugging Face peft folder (or its adapter_model.*), and an RWKV-PEFT rwkv-N.pth (adapter key suffixes,
or official tensors without the embedding and head). A model file gives None (inspect shows its spec).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_ADAPTER_SUFFIXES = (".lora_A", ".lora_B", ".disha", ".miss", ".init_lora_A", ".init_lora_B")


def describe_adapter(path: str | Path) -> dict[str, Any] | None:
    """A summary of the adapter at `path`, or None when it is a model file (or not a file we can tell)."""
    from rwkv_tune.peft.hf_format import describe_hf, hf_folder, summarize
    from rwkv_tune.peft.rwkv_peft import has_our_metadata, is_hf_adapter

    path = Path(path)
    if hf_folder(path) is not None or (path.is_file() and is_hf_adapter(path)):
        return describe_hf(path)
    if not path.is_file():
        return None
    if path.suffix == ".safetensors" and has_our_metadata(path):
        from rwkv_tune.peft.adapter_file import read_adapter

        adapter = read_adapter(path)
        return {"tool": f"rwkv-tune {adapter.tool_version}".strip(), "format": "rwkv-tune-adapter",
                "path": str(path), **summarize(adapter), "base_spec": adapter.base_spec}
    if path.suffix != ".pth":
        return None  # RWKV-PEFT writes .pth; a .safetensors without adapter metadata or peft keys is a model
    return _describe_rwkv_peft(path)


def _describe_rwkv_peft(path: Path) -> dict[str, Any] | None:
    from rwkv_tune.checkpoint import load_state_dict
    from rwkv_tune.peft.hf_format import summarize
    from rwkv_tune.peft.rwkv_peft import read_rwkv_peft, strip_prefix

    tensors = {strip_prefix(k): v for k, v in load_state_dict(path).items()}
    is_adapter = any(k.endswith(_ADAPTER_SUFFIXES) for k in tensors)
    if not is_adapter and ("emb.weight" in tensors or "head.weight" in tensors):
        return None  # a model (inspect shows its spec)
    if not any(k.startswith("blocks.") for k in tensors):
        return None
    lora = any(k.endswith(".lora_A") for k in tensors)
    adapter = read_rwkv_peft(tensors, source=str(path), alpha=1.0 if lora else None)
    info = {"tool": "RWKV-PEFT (G1 rwkv-N.pth, no metadata)", "format": "rwkv-peft", "path": str(path),
            **summarize(adapter)}
    if lora:
        info.update(method="lora (or pissa with its init_pissa.pth)", alpha="not recorded (merge asks --lora-alpha)")
        info.pop("scale", None)
        info.pop("rslora", None)
    return info


def adapter_for_generation(source: str | Path, base: str | Path | None = None) -> tuple[Any, Path | None]:
    """(Adapter, its base model path) when `source` is an adapter of ours or a peft folder; (None, None) otherwise.

    The base is `base`, else the path a peft folder's adapter_config.json records (base_model_name_or_path).
    """
    from rwkv_tune.errors import ConfigError
    from rwkv_tune.peft.hf_format import hf_folder, read_hf_config
    from rwkv_tune.peft.rwkv_peft import has_our_metadata, is_hf_adapter, load_any_adapter

    source = Path(source)
    is_run = source.is_dir() and (source / "preset.yaml").is_file()
    hf = not is_run and (hf_folder(source) is not None or (source.is_file() and is_hf_adapter(source)))
    ours = source.is_file() and source.suffix == ".safetensors" and not hf and has_our_metadata(source)
    if not (hf or ours):
        return None, None
    if base is None and hf:
        recorded = read_hf_config(hf_folder(source) or source.parent).get("base_model_name_or_path")
        base = recorded if recorded and Path(recorded).is_file() else None
    if base is None:
        raise ConfigError(f"{source} is an adapter; generating needs the base model it was trained on",
                          f"Pass --base BASE.pth (e.g. rwkv-tune generate {source} --base BASE.pth -p TEXT).")
    return load_any_adapter(source), Path(base)
