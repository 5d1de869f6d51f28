"""The `method:` section's own rules: aliases, layer ranges, target names, dense parts, per-method conflicts.

Torch-free. Preset validation and `PeftConfig` (what `rwkv_tune.peft` applies) both use these, so a
method section the preset accepts is one PEFT accepts.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from rwkv_tune.errors import ConfigError, collecting
from rwkv_tune.preset.schema import ALL_TARGETS, TRAIN_PARTS, MethodSection

# A name that is another method's alias, with the MiSS mode it implies (None: the section's mode).
ALIASES = {"disha": ("miss", None), "bone": ("miss", "bone"), "bat": ("miss", "bat")}


def canonical_name(name: str) -> str:
    """The canonical method name: disha/bone/bat → miss (DiSHA was renamed MiSS)."""
    name = str(name).strip().lower()
    return ALIASES[name][0] if name in ALIASES else name


def parse_layers(value: Any, n_layer: int | None = None) -> tuple[int, ...] | None:
    """None (all layers), 'a-b' (inclusive), 'a,b,c', an int, or a list of ints → sorted layer ids."""
    if value is None or value == "" or value == "all":
        return None
    ids: list[int] = []
    items = value if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if isinstance(item, bool):
            raise ConfigError(f"method.layers = {value!r} is not a layer range", "Use e.g. '12-23' or [0, 1, 2].")
        if isinstance(item, int):
            ids.append(item)
            continue
        for part in str(item).split(","):
            part = part.strip()
            m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
            if m:
                lo, hi = int(m.group(1)), int(m.group(2))
                if lo > hi:
                    raise ConfigError(f"method.layers = {value!r} has a backwards range {part!r}",
                                      f"Write it as '{hi}-{lo}'.")
                ids.extend(range(lo, hi + 1))
            elif part.isdigit():
                ids.append(int(part))
            else:
                raise ConfigError(f"method.layers = {value!r} is not a layer range",
                                  "Use null (all), '12-23', '0,5,7' or a list of indices.")
    ids = sorted(set(ids))
    if not ids or ids[0] < 0:
        raise ConfigError(f"method.layers = {value!r} selects no valid layer", "Use e.g. '12-23' or [0, 1, 2].")
    if n_layer is not None and ids[-1] >= n_layer:
        raise ConfigError(f"method.layers = {value!r} names layer {ids[-1]}, but the model has {n_layer} layers "
                          f"(0-{n_layer - 1})", f"Use layers within 0-{n_layer - 1}.")
    return tuple(ids)


def parse_targets(value: Any) -> tuple[str, ...] | None:
    """None (the version's default Linears) or the named ones; 'att'/'ffn' mean all of that block's."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        item = str(item).strip()
        if item not in ALL_TARGETS and item not in ("att", "ffn"):
            close = difflib.get_close_matches(item, ALL_TARGETS, n=1)
            raise ConfigError(f"method.targets has {item!r}, which is not an adaptable Linear layer",
                              f"Did you mean '{close[0]}'?" if close else f"Use any of: {', '.join(ALL_TARGETS)}.")
        out.append(item)
    if not out:
        raise ConfigError("method.targets is empty", "Remove it (default: every att/ffn Linear) or list some.")
    return tuple(dict.fromkeys(out))


def parse_train_parts(value: Any) -> tuple[str, ...] | None:
    """None (the method's default), () for none, or the named dense parts."""
    if value is None:
        return None
    if value is False or value == "none":
        return ()
    items = [value] if isinstance(value, str) else list(value)
    bad = [p for p in items if p not in TRAIN_PARTS]
    if bad:
        raise ConfigError(f"method.train_parts has {bad[0]!r}", f"Use any of: {', '.join(TRAIN_PARTS)} (or []).")
    return tuple(dict.fromkeys(items))


def implied_mode(section: MethodSection) -> str:
    """The MiSS mode in effect: bat/bone as a name imply it; a different explicit mode is a ConfigError."""
    name = str(section.name).strip().lower()
    implied = ALIASES.get(name, (None, None))[1]
    mode = str(section.mode).lower()
    if implied is None:
        return mode
    if mode != implied and mode != "bone":  # the preset always carries mode: bone (its default)
        raise ConfigError(f"method.name = {name} means mode {implied}, but method.mode = {mode}",
                          f"Use name: miss with mode: {mode}, or drop the mode.")
    return implied


def method_errors(section: MethodSection, quant: str) -> list[ConfigError]:
    """Every mistake of a field-checked method section that its keys alone do not show (all collected)."""
    errors: list[ConfigError] = []
    mode = section.mode
    with collecting(errors):
        mode = implied_mode(section)
    for parse, value in ((parse_targets, section.targets), (parse_layers, section.layers),
                         (parse_train_parts, section.train_parts)):
        with collecting(errors):
            parse(value)
    name = canonical_name(section.name)
    if name == "full" and quant != "none":
        errors.append(ConfigError(f"quant = {quant} freezes the base weights, but method full trains them",
                                  "Use quant: none with method full, or an adapter method (lora, pissa, miss)."))
    if section.load and name in ("state", "full"):
        errors.append(ConfigError(f"method.load starts an adapter method from a file, not method {name}",
                                  "Remove method.load, or use lora, pissa or miss."))
    if section.load and quant != "none":
        errors.append(ConfigError(f"method.load with quant = {quant}: the file's adapter was trained on other weights "
                                  "than the quantized ones", "Use quant: none with method.load."))
    if name == "miss" and mode == "bat" and section.dropout > 0:
        errors.append(ConfigError(f"method.dropout = {section.dropout} does not apply to mode bat (it rebuilds the "
                                  "weight)", "Set dropout: 0, or use mode: bone."))
    return errors
