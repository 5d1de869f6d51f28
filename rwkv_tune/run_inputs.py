"""What `rwkv-tune merge RUN_DIR` merges: the base, adapter, quant and output a run directory names.

Torch-free. The run's resolved `preset.yaml` is read and validated with the preset schema (never
re-parsed by hand); explicit paths override what it names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from rwkv_tune.errors import ConfigError, ConfigErrors
from rwkv_tune.preset import Preset, from_dict
from rwkv_tune.runs import RunDir


@dataclass
class RunInputs:
    """What `rwkv-tune merge RUN_DIR` found in a run directory (its resolved preset.yaml and files)."""

    run_dir: Path
    base: Path
    adapter: Path
    out: Path
    method: str
    quant: str  # the run's quant (preset.yaml); the adapter records it too and merge follows the adapter
    dtype: str | None  # output.merge_dtype
    pissa_init: str | None  # where PiSSA's init (A0, B0) comes from, for a PiSSA run


def read_run_preset(path: str | Path) -> Preset:
    """The resolved preset a run directory keeps, validated; ConfigError if it is not a run directory."""
    root = Path(path)
    run = RunDir(root)
    if not root.is_dir() or not run.preset.is_file():
        what = "it does not exist" if not root.exists() else "it is a file" if root.is_file() else "no preset.yaml"
        raise ConfigError(f"{root} is not a run directory ({what})",
                          "Pass a run directory written by `rwkv-tune train`, or --base BASE --adapter ADAPTER "
                          "--out OUT.")
    unreadable = f"{run.preset} is not a readable preset"
    try:
        raw = yaml.safe_load(run.preset.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError):
        raise ConfigError(unreadable, "Pass --base and --adapter explicitly.") from None
    try:
        return from_dict(raw, source=str(run.preset))
    except ConfigErrors as exc:
        raise ConfigError(f"{unreadable} ({exc.errors[0].message}, …)", "Pass --base and --adapter explicitly.") from None
    except ConfigError as exc:
        raise ConfigError(f"{unreadable} ({exc.message})", "Pass --base and --adapter explicitly.") from None


def resolve_run_dir(path: str | Path, *, base: str | Path | None = None, adapter: str | Path | None = None,
                    out: str | Path | None = None, fmt: str | None = None) -> RunInputs:
    """Base, adapter, quant and output of a run directory; `base`/`adapter`/`out` override what it names."""
    root = Path(path)
    run = RunDir(root)
    preset = read_run_preset(root)
    model_path = preset.model.path
    if base is None:
        source = (preset.provenance or {}).get("source")
        tries = [Path(model_path)] if Path(model_path).is_absolute() else [
            Path(model_path), root / model_path, root.parent / model_path,
            *([Path(source).parent / model_path] if source else [])]
        found = [p for p in tries if model_path and p.is_file()]
        if not found:
            raise ConfigError(f"the run's base model '{model_path}' (model.path in {run.preset}) was not found",
                              "Pass --base with the base model's path.")
        base = found[0]
    if adapter is None:
        adapter = run.adapter
        if not run.adapter.is_file():
            latest = run.latest_checkpoint()
            hint = (f"Pass --adapter {latest / 'adapter.safetensors'} (the latest checkpoint)" if latest
                    else "Has the run saved anything yet?")
            raise ConfigError(f"{root} has no adapter.safetensors (the run has not finished)", hint)
    kind = fmt or (Path(out).suffix.lstrip(".") if out is not None else "pth")
    target = Path(out) if out is not None else (run.merged if kind == "pth" else root / f"merged.{kind}")
    pissa = "the adapter (init_lora_A/B)" if preset.method_name == "pissa" else None
    return RunInputs(root, Path(base), Path(adapter), target, preset.method.name, preset.quant,
                     preset.output.merge_dtype, pissa)
