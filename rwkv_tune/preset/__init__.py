"""The preset: the user's single source of truth for a run — its schema, validation, overrides and YAML.

Torch-free (the wizard, the estimator and `train --dry-run` use it). Keys keep RWKV-PEFT's names where
they exist. `schema` holds every key, default, choice list and help line; `validate` checks a preset and
reports all of its mistakes at once; this module reads, overrides and writes presets (yaml is imported
when used: the CLI imports the schema at start-up).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rwkv_tune.errors import ConfigError, collecting, raise_all
from rwkv_tune.preset.schema import (
    CANONICAL_METHOD,
    CHOICE_KEYS,
    DATA_TYPES,
    DATALOADS,
    EXPORTS,
    LOSS_MASKS,
    MERGE_DTYPES,
    METHODS,
    MISS_MODES,
    OPS,
    PRECISIONS,
    QUANT_HELP,
    QUANT_KINDS,
    QUANTS,
    SCHEDULES,
    SECTIONS,
    STATE_GRAD_OPS,
    STRATEGIES,
    TRAIN_PARTS,
    TRAIN_TYPES,
    DataSection,
    MethodSection,
    ModelSection,
    OutputSection,
    Preset,
    TrainSection,
    choices,
    key_help,
)
from rwkv_tune.preset.validate import (
    check_against_spec,
    check_cross_fields,
    check_machine,
    cross_field_errors,
    from_dict,
)

__all__ = [
    "CANONICAL_METHOD", "CHOICE_KEYS", "DATALOADS", "DATA_TYPES", "EXPORTS", "LOSS_MASKS", "MERGE_DTYPES", "METHODS",
    "MISS_MODES", "OPS", "PRECISIONS", "QUANTS", "QUANT_HELP", "QUANT_KINDS", "SCHEDULES", "SECTIONS",
    "STATE_GRAD_OPS", "STRATEGIES", "TRAIN_PARTS", "TRAIN_TYPES", "DataSection", "MethodSection", "ModelSection",
    "OutputSection", "Preset", "TrainSection", "apply_overrides", "check_against_spec", "check_cross_fields",
    "check_machine", "choices", "cross_field_errors", "dump", "from_dict", "key_help", "load", "parse_set",
]


def _parse_one(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r} has no '='", "Write --set section.key=value, e.g. --set train.lr_init=1e-4.")
    import yaml

    key, _, text = item.partition("=")
    path = key.strip().split(".")
    if len(path) > 2:
        raise ConfigError(f"--set {key.strip()} is too deep", "Write section.key=value, e.g. train.lr_init=1e-4.")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    return path, value


def parse_set(assignments: list[str]) -> list[tuple[list[str], Any]]:
    """Parse `--set train.lr_init=1e-4` style overrides (values are YAML: numbers, bools, lists)."""
    out: list[tuple[list[str], Any]] = []
    errors: list[ConfigError] = []
    for item in assignments:
        with collecting(errors):
            out.append(_parse_one(item))
    raise_all(errors)
    return out


def _apply(raw: dict[str, Any], assignments: list[str], errors: list[ConfigError]) -> dict[str, Any]:
    """`raw` with the well-formed overrides applied; each malformed one is added to `errors`."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for item in assignments:
        try:
            path, value = _parse_one(item)
        except ConfigError as exc:
            errors.append(exc)
            continue
        if len(path) == 1:
            raw[path[0]] = value
            continue
        section = raw.get(path[0])
        if section is None or isinstance(section, str):
            section = {} if section is None else {"path" if path[0] == "model" else "name": section}
        raw[path[0]] = {**section, path[1]: value}
    return raw


def apply_overrides(raw: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply --set overrides to a raw preset mapping (their values are validated by from_dict)."""
    errors: list[ConfigError] = []
    raw = _apply(raw, assignments, errors)
    raise_all(errors)
    return raw


def load(path: str | Path, overrides: list[str] | None = None) -> Preset:
    """Read a preset YAML (safe loader), apply --set overrides and validate it (all mistakes at once)."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"preset {path} does not exist", "Create one with `rwkv-tune init` or `rwkv-tune presets copy`.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"preset {path} is not valid YAML{where}", "Check indentation and colons there.") from None
    errors: list[ConfigError] = []
    if overrides and isinstance(raw, dict):
        raw = _apply(raw, overrides, errors)
    with collecting(errors):
        preset = from_dict(raw, source=str(path))
    raise_all(errors)
    return preset


def dump(preset: Preset) -> str:
    """The preset as YAML with every value resolved (what a run directory keeps)."""
    import yaml

    return yaml.safe_dump(preset.to_dict(), sort_keys=False, allow_unicode=True)
