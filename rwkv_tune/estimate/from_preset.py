"""Estimate options from a preset file, checked by the preset schema: what `train` refuses, `estimate` refuses.

Torch-free. A preset for estimating may name a released model instead of its file (model: {size: 3B,
version: 6}) and may leave out the data; everything else is validated exactly as `train` validates it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rwkv_tune.errors import ConfigError, collecting, raise_all
from rwkv_tune.preset import from_dict

ESTIMATE_ONLY_MODEL_KEYS = ("size", "version")
_TRAIN_KEYS = ("micro_bsz", "grad_cp", "precision", "strategy", "devices", "accumulate_grad_batches", "train_type",
               "chunk_ctx", "epoch_steps", "epoch_count")


def _read(path: Path) -> dict[str, Any]:
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
    return data


def options_from_preset(path: Path) -> dict[str, Any]:
    """The `estimate(...)` keyword arguments a preset sets (only the keys it names); all its mistakes at once."""
    raw = _read(path)
    model = raw.get("model") or {}
    model = {"path": model} if isinstance(model, str) else model
    released = {}
    if isinstance(model, dict):
        released = {k: model[k] for k in ESTIMATE_ONLY_MODEL_KEYS if model.get(k) is not None}
        model = {k: v for k, v in model.items() if k not in ESTIMATE_ONLY_MODEL_KEYS}
    errors: list[ConfigError] = []
    if "version" in released and (isinstance(released["version"], bool) or not isinstance(released["version"], int)):
        errors.append(ConfigError(f"model.version = {released['version']!r} is not a whole number",
                                  "Write 5, 6 or 7."))
    with collecting(errors):
        preset = from_dict({**raw, "model": model}, source=str(path), need_paths=False)
    raise_all(errors)
    out: dict[str, Any] = {}
    if preset.model.path:
        p = Path(preset.model.path).expanduser()
        out["model"] = p if p.is_absolute() or p.exists() else path.parent / p
    if "size" in released:
        out["size"] = str(released["size"])
    if "version" in released:
        out["version"] = released["version"]
    method = raw.get("method")
    given = {"name": method} if isinstance(method, str) else (method or {})
    for key, option in (("name", "method"), ("r", "rank"), ("mode", "mode")):
        if given.get(key) is not None:
            out[option] = getattr(preset.method, key)
    for key in ("train_parts", "targets"):
        if given.get(key) is not None:
            out[key] = tuple(getattr(preset.method, key))
    if raw.get("quant") is not None:
        out["quant"] = preset.quant
    if (raw.get("data") or {}).get("ctx_len") is not None:
        out["ctx_len"] = preset.data.ctx_len
    train = raw.get("train") or {}
    for key in _TRAIN_KEYS:
        if train.get(key) is not None:
            out[key] = getattr(preset.train, key)
    objective = raw.get("objective")
    given_objective = {"type": objective} if isinstance(objective, str) else (objective or {})
    for key, option in (("type", "objective"), ("group_size", "group_size"), ("max_new_tokens", "max_new_tokens")):
        if given_objective.get(key) is not None:
            out[option] = getattr(preset.objective, key)
    if train.get("nodes") is not None:  # ZeRO shards over every GPU of every node
        out["devices"] = out.get("devices", 1) * preset.train.nodes
    return out
