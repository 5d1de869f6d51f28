"""Estimate options read leniently from a preset file: a preset without a model path or data still estimates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rwkv_tune.errors import ConfigError

_TRAIN_KEYS = {"micro_bsz": int, "grad_cp": bool, "precision": str, "strategy": str, "devices": int,
               "accumulate_grad_batches": int, "train_type": str, "chunk_ctx": int, "epoch_steps": int,
               "epoch_count": int}


def _typed(key: str, value: Any, kind: type) -> Any:
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"preset {key} must be an integer, got {value!r}", f"Write e.g. {key}: 1.")
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"preset {key} must be true or false, got {value!r}", f"Write {key}: true.")
    if kind is str and not isinstance(value, str):
        raise ConfigError(f"preset {key} must be a string, got {value!r}", f"Write e.g. {key}: bf16.")
    return value


def read_preset_options(path: Path) -> dict[str, Any]:
    """`estimate()` options from a preset YAML (model/method/quant/data/train); a partial preset is fine."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"preset {path} does not exist", "Check the path.") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"preset {path} is not valid YAML ({str(exc).splitlines()[0]})",
                          "Fix the YAML syntax.") from None
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"preset {path} is a {type(data).__name__}, not a mapping", "Write `key: value` lines.")
    out: dict[str, Any] = {}
    model = data.get("model") or {}
    model = {"path": model} if isinstance(model, str) else model
    if model.get("path"):
        p = Path(model["path"]).expanduser()
        out["model"] = p if p.is_absolute() or p.exists() else path.parent / p
    for key in ("size", "version"):
        if model.get(key) is not None:
            out[key] = str(model[key]) if key == "size" else _typed(f"model.{key}", model[key], int)
    method = data.get("method")
    method = {"name": method} if isinstance(method, str) else (method or {})
    if method.get("name") is not None:
        out["method"] = _typed("method.name", method["name"], str)
    if method.get("r") is not None:
        out["rank"] = _typed("method.r", method["r"], int)
    if method.get("mode") is not None:
        out["mode"] = _typed("method.mode", method["mode"], str)
    for key in ("train_parts", "targets"):
        if method.get(key) is not None:
            out[key] = tuple(method[key])
    if data.get("quant") is not None:
        out["quant"] = str(data["quant"]).lower()
    ctx = (data.get("data") or {}).get("ctx_len")
    if ctx is not None:
        out["ctx_len"] = _typed("data.ctx_len", ctx, int)
    train = data.get("train") or {}
    for key, kind in _TRAIN_KEYS.items():
        if train.get(key) is not None:
            out[key] = _typed(f"train.{key}", train[key], kind)
    if train.get("nodes") is not None:  # ZeRO shards over every GPU of every node
        out["devices"] = out.get("devices", 1) * _typed("train.nodes", train["nodes"], int)
    return out
