"""`PeftConfig`: the preset's `method:` section as a validated dataclass (torch-free).

One field per preset key, so `PeftConfig.from_dict(preset["method"])` and `cfg.to_dict()` round-trip.
Keys that do not apply to the chosen method (alpha for PiSSA, mode for LoRA…) are accepted and
ignored, because the preset carries every key; `to_dict()` writes only the ones that matter.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field, fields
from typing import Any

from rwkv_tune.errors import ConfigError

METHODS = ("lora", "pissa", "miss", "state", "full")
ALIASES = {"disha": ("miss", None), "bone": ("miss", "bone"), "bat": ("miss", "bat")}
MODES = ("bone", "bat", "mini")
QUANTS = ("none", "int8", "nf4", "fp4")
TRAIN_PARTS = ("emb", "head", "time", "ln", "deepembed")  # deepembed: RWKV-7a/7b per-token tables
DEFAULT_TRAIN_PARTS = ("time", "ln")  # RWKV-PEFT's default on top of an adapter
ATT_TARGETS = ("att.receptance", "att.key", "att.value", "att.output", "att.gate")
FFN_TARGETS = ("ffn.key", "ffn.value", "ffn.receptance")
# RWKV-7a/7b only (not default): the Linears that map LN0(emb) into the per-token tables, and 7b's q.
DEEPEMBED_TARGETS = ("ffn.s_emb_x", "qkv.qq", "qkv.k_emb_x", "qkv.v_emb_x")
ALL_TARGETS = ATT_TARGETS + FFN_TARGETS + DEEPEMBED_TARGETS
# Per-method keys written by to_dict (besides name, quant, targets, layers, train_parts).
_METHOD_KEYS = {"lora": ("r", "alpha", "dropout", "rslora"), "pissa": ("r", "svd_niter"),
                "miss": ("r", "mode", "mini_r", "dropout"), "state": (), "full": ()}


def canonical_name(name: str) -> str:
    """The canonical method name: disha/bone/bat → miss (DiSHA was renamed MiSS)."""
    name = str(name).strip().lower()
    return ALIASES[name][0] if name in ALIASES else name


def default_targets(version: int) -> tuple[str, ...]:
    """att receptance/key/value/output (+gate on v5/v6) and ffn key/value (+receptance on v5/v6)."""
    if version == 7:
        return ("att.receptance", "att.key", "att.value", "att.output", "ffn.key", "ffn.value")
    return ATT_TARGETS + FFN_TARGETS


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


@dataclass
class PeftConfig:
    """What to train: method, its hyper-parameters, which Linear layers, which layers, which dense parts."""

    name: str = "lora"
    r: int = 64
    alpha: float = 32.0
    dropout: float = 0.0
    rslora: bool = False
    svd_niter: int = 4
    mode: str = "bone"
    mini_r: int = 1
    targets: tuple[str, ...] | None = None  # None: default_targets(version)
    layers: tuple[int, ...] | None = None  # None: every layer
    train_parts: tuple[str, ...] | None = None  # None: time+ln on adapters, nothing for state/full
    quant: str = "none"
    extra: dict[str, Any] = field(default_factory=dict)  # internal, e.g. {"bat_index": "in"} for RWKV-PEFT files

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | str) -> PeftConfig:
        """Validate a preset `method:` section (or a bare method name); raise ConfigError naming the key."""
        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, dict):
            raise ConfigError(f"method = {raw!r} is not a mapping", "Write e.g. method: {name: lora, r: 64}.")
        known = {f.name for f in fields(cls)}
        for key in raw:
            if key not in known:
                close = difflib.get_close_matches(str(key), sorted(known - {"extra"}), n=1)
                raise ConfigError(f"method.{key} is not a method setting",
                                  f"Did you mean '{close[0]}'?" if close else f"Use: {', '.join(sorted(known))}.")
        raw = {k: v for k, v in raw.items() if v is not None}
        given = str(raw.get("name", "lora")).strip().lower()
        if given not in METHODS and given not in ALIASES:
            close = difflib.get_close_matches(given, list(METHODS) + list(ALIASES), n=1)
            raise ConfigError(f"method.name = {given!r} is not a method",
                              f"Did you mean '{close[0]}'?" if close else f"Use one of: {', '.join(METHODS)} "
                              "(disha, bone, bat are names of miss).")
        name = canonical_name(given)
        mode = str(raw.get("mode", "bone")).lower()
        implied = ALIASES.get(given, (None, None))[1]
        if implied is not None:
            if "mode" in raw and mode != implied and mode != "bone":
                raise ConfigError(f"method.name = {given} means mode {implied}, but method.mode = {mode}",
                                  f"Use name: miss with mode: {mode}, or drop the mode.")
            mode = implied
        cfg = cls(
            name=name,
            r=_int(raw, "r", 64, lo=1),
            alpha=_float(raw, "alpha", 32.0, lo=0.0, strict_lo=True),
            dropout=_float(raw, "dropout", 0.0, lo=0.0, hi=0.999),
            rslora=_bool(raw, "rslora", False),
            svd_niter=_int(raw, "svd_niter", 4, lo=0),
            mode=mode,
            mini_r=_int(raw, "mini_r", 1, lo=1),
            targets=_targets(raw.get("targets")),
            layers=parse_layers(raw.get("layers")),
            train_parts=_train_parts(raw.get("train_parts")),
            quant=_quant(raw.get("quant", "none")),
            extra=dict(raw.get("extra", {})),
        )
        if name == "miss" and cfg.mode not in MODES:
            raise ConfigError(f"method.mode = {cfg.mode!r} is not a MiSS mode", f"Use one of: {', '.join(MODES)}.")
        if name == "full" and cfg.quant != "none":
            raise ConfigError(f"quant = {cfg.quant} freezes the base weights, but method full trains them",
                              "Use quant: none with full, or an adapter method (lora, pissa, miss).")
        if name == "miss" and cfg.mode == "bat" and cfg.dropout > 0:
            raise ConfigError(f"method.dropout = {cfg.dropout} does not apply to mode bat (it rebuilds the weight)",
                              "Set dropout: 0, or use mode: bone.")
        return cfg

    @property
    def parts(self) -> tuple[str, ...]:
        """The dense train_parts in effect (state and full ignore them, as RWKV-PEFT does)."""
        if self.name in ("state", "full"):
            return ()
        return DEFAULT_TRAIN_PARTS if self.train_parts is None else self.train_parts

    @property
    def scale(self) -> float:
        """LoRA's output scale: alpha/r, or alpha/sqrt(r) with rsLoRA; PiSSA and MiSS have none (1)."""
        if self.name != "lora":
            return 1.0
        return self.alpha / (self.r ** 0.5 if self.rslora else self.r)

    def to_dict(self) -> dict[str, Any]:
        """The canonical preset section: canonical name, only the keys this method uses."""
        out: dict[str, Any] = {"name": self.name}
        for key in _METHOD_KEYS[self.name]:
            if key == "mini_r" and self.mode != "mini":
                continue
            if key == "dropout" and self.name == "miss" and self.mode == "bat":
                continue
            out[key] = getattr(self, key)
        if self.name not in ("state", "full"):
            out["targets"] = list(self.targets) if self.targets is not None else None
            out["train_parts"] = list(self.parts)
        if self.name != "full":
            out["layers"] = list(self.layers) if self.layers is not None else None
        out["quant"] = self.quant
        if self.extra:
            out["extra"] = dict(self.extra)
        return out


def _int(raw: dict, key: str, default: int, *, lo: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) and not (isinstance(value, float) and value.is_integer()):
        raise ConfigError(f"method.{key} = {value!r} is not a whole number", f"Use e.g. {key}: {default}.")
    if int(value) < lo:
        raise ConfigError(f"method.{key} = {value} is below {lo}", f"Use {key} ≥ {lo}.")
    return int(value)


def _float(raw: dict, key: str, default: float, *, lo: float, hi: float | None = None,
           strict_lo: bool = False) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"method.{key} = {value!r} is not a number", f"Use e.g. {key}: {default}.")
    if value < lo or (strict_lo and value == lo) or (hi is not None and value > hi):
        bound = f"> {lo}" if strict_lo else f"in [{lo}, {hi}]" if hi is not None else f"≥ {lo}"
        raise ConfigError(f"method.{key} = {value} is out of range", f"Use {key} {bound}.")
    return float(value)


def _bool(raw: dict, key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"method.{key} = {value!r} is not true/false", f"Use {key}: true or {key}: false.")
    return value


def _quant(value: Any) -> str:
    value = "none" if value in (None, False) else str(value).lower()
    if value not in QUANTS:
        raise ConfigError(f"quant = {value!r} is not one of {', '.join(QUANTS)}", "Use quant: none, int8 or nf4.")
    return value


def _targets(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        item = str(item).strip()
        if item in ALL_TARGETS or item in ("att", "ffn"):  # att/ffn: all of that block's, per version
            out.append(item)
        else:
            close = difflib.get_close_matches(item, ALL_TARGETS, n=1)
            raise ConfigError(f"method.targets has {item!r}, which is not an adaptable Linear layer",
                              f"Did you mean '{close[0]}'?" if close else f"Use any of: {', '.join(ALL_TARGETS)}.")
    if not out:
        raise ConfigError("method.targets is empty", "Remove it (default: every att/ffn Linear) or list some.")
    return tuple(dict.fromkeys(out))


def _train_parts(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if value is False or value == "none":
        return ()
    items = [value] if isinstance(value, str) else list(value)
    bad = [p for p in items if p not in TRAIN_PARTS]
    if bad:
        raise ConfigError(f"method.train_parts has {bad[0]!r}", f"Use any of: {', '.join(TRAIN_PARTS)} (or []).")
    return tuple(dict.fromkeys(items))
