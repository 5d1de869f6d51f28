"""`PeftConfig`: the preset's `method:` section (plus quant) as PEFT applies it (torch-free).

The section is validated by the preset schema (`rwkv_tune.preset`): the same keys, defaults, choices,
ranges and method rules, so a section the preset accepts is one PEFT accepts. `PeftConfig` adds what
PEFT needs from it: the canonical name, the MiSS mode in effect, parsed layers and targets.
`PeftConfig.from_dict(preset["method"])` and `cfg.to_dict()` round-trip; keys that do not apply to
the chosen method (alpha for PiSSA, mode for LoRA…) are accepted and ignored, and `to_dict()` writes
only the ones that matter.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from typing import Any

from rwkv_tune.errors import ConfigError, raise_all
from rwkv_tune.preset.method import (
    ALIASES,
    canonical_name,
    implied_mode,
    method_errors,
    parse_layers,
    parse_targets,
    parse_train_parts,
)
from rwkv_tune.preset.schema import (
    ALL_TARGETS,
    ATT_TARGETS,
    DEEPEMBED_TARGETS,
    DEFAULT_TRAIN_PARTS,
    FFN_TARGETS,
    MISS_MODES,
    QUANTS,
    TRAIN_PARTS,
    MethodSection,
)
from rwkv_tune.preset.schema import (
    METHODS as SECTION_METHODS,
)
from rwkv_tune.preset.validate import check_quant, check_section

METHODS = tuple(m for m in SECTION_METHODS if m not in ALIASES)  # the canonical names
MODES = MISS_MODES
__all__ = ["ALIASES", "ALL_TARGETS", "ATT_TARGETS", "DEEPEMBED_TARGETS", "DEFAULT_TRAIN_PARTS", "FFN_TARGETS", "METHODS", "MODES",
           "QUANTS", "TRAIN_PARTS", "PeftConfig", "canonical_name", "default_targets", "parse_layers"]
# Per-method keys written by to_dict (besides name, quant, targets, layers, train_parts).
_METHOD_KEYS = {"lora": ("r", "alpha", "dropout", "rslora"), "pissa": ("r", "svd_niter"),
                "miss": ("r", "mode", "mini_r", "dropout"), "state": (), "full": ()}
_DEFAULTS = MethodSection()


def default_targets(version: int) -> tuple[str, ...]:
    """att receptance/key/value/output (+gate on v5/v6) and ffn key/value (+receptance on v5/v6)."""
    if version == 7:
        return ("att.receptance", "att.key", "att.value", "att.output", "ffn.key", "ffn.value")
    return ATT_TARGETS + FFN_TARGETS


@dataclass
class PeftConfig:
    """What to train: method, its hyper-parameters, which Linear layers, which layers, which dense parts."""

    name: str = _DEFAULTS.name
    r: int = _DEFAULTS.r
    alpha: float = _DEFAULTS.alpha
    dropout: float = _DEFAULTS.dropout
    rslora: bool = _DEFAULTS.rslora
    svd_niter: int = _DEFAULTS.svd_niter
    mode: str = _DEFAULTS.mode
    mini_r: int = 1  # the section's null: MiSS mini's smallest block
    targets: tuple[str, ...] | None = None  # None: default_targets(version)
    layers: tuple[int, ...] | None = None  # None: every layer
    train_parts: tuple[str, ...] | None = None  # None: time+ln on adapters, nothing for state/full
    quant: str = "none"
    extra: dict[str, Any] = field(default_factory=dict)  # internal, e.g. {"bat_index": "in"} for RWKV-PEFT files

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | str) -> PeftConfig:
        """Validate a preset `method:` section (or a bare method name), plus quant; every mistake at once."""
        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, dict):
            raise ConfigError(f"method = {raw!r} is not a mapping", "Write e.g. method: {name: lora, r: 64}.")
        known = [f.name for f in fields(MethodSection)]
        errors: list[ConfigError] = []
        for key in raw:
            if key not in known and key not in ("quant", "extra"):
                close = difflib.get_close_matches(str(key), known, n=1)
                errors.append(ConfigError(f"method.{key} is not a method setting",
                                          f"Did you mean '{close[0]}'?" if close else f"Use: {', '.join(known)}."))
        section_raw = {k: v for k, v in raw.items() if k in known and v is not None}
        if isinstance(section_raw.get("name"), str):
            section_raw["name"] = section_raw["name"].strip().lower()
        if section_raw.get("train_parts") is False or section_raw.get("train_parts") == "none":
            section_raw["train_parts"] = []
        section = check_section("method", MethodSection, section_raw, errors)
        quant = check_quant(str(raw["quant"]).lower() if raw.get("quant") else "none", errors)
        if not errors:
            errors += method_errors(section, quant)
        raise_all(errors)
        return cls.from_section(section, quant=quant, extra=dict(raw.get("extra") or {}),
                                train_parts_given="train_parts" in section_raw)

    @classmethod
    def from_section(cls, section: MethodSection, *, quant: str = "none", extra: dict[str, Any] | None = None,
                     train_parts_given: bool = True) -> PeftConfig:
        """The PEFT view of a validated preset method section (`Preset.method`)."""
        return cls(
            name=canonical_name(section.name), r=section.r, alpha=section.alpha, dropout=section.dropout,
            rslora=section.rslora, svd_niter=section.svd_niter, mode=implied_mode(section),
            mini_r=section.mini_r if section.mini_r is not None else 1,
            targets=parse_targets(section.targets), layers=parse_layers(section.layers),
            train_parts=parse_train_parts(section.train_parts) if train_parts_given else None,
            quant=quant, extra=dict(extra or {}))

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
