"""Preset validation: field checks, cross-field checks, checks against the model and the machine.

Torch-free. Every mistake is a `ConfigError` with the key, the value and the fix (an unknown key names
the closest valid key; a bad value names the allowed ones). A check collects all of a preset's
mistakes and raises them together (`ConfigErrors`), so one run shows everything to fix.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from dataclasses import fields
from typing import Any

from rwkv_tune.errors import ConfigError, collecting, raise_all
from rwkv_tune.objectives.config import DATA_TYPES as OBJECTIVE_DATA
from rwkv_tune.objectives.config import ObjectiveConfig
from rwkv_tune.preset.method import method_errors
from rwkv_tune.preset.schema import QUANTS, SECTIONS, STATE_GRAD_OPS, ObjectiveSection, Preset


def _suggest(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    return f"Did you mean '{close[0]}'?" if close else f"Valid keys: {', '.join(valid)}."


def _coerce(where: str, value: Any, f: Any) -> Any:
    """Check one value against its field's type, choices and range; return it (ints widen to floats)."""
    tp = str(f.type)
    meta = f.metadata
    if value is None:
        if "None" in tp or f.default is None:
            return None
        raise ConfigError(f"{where} is empty", f"Set a value (default: {f.default!r}).")
    if tp.startswith("bool"):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} = {value!r} is not true/false", "Write true or false.")
    elif tp.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ConfigError(f"{where} = {value!r} is not a whole number", "Write an integer, e.g. 64.")
    elif tp.startswith("float"):
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as text
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} = {value!r} is not a number", "Write a number, e.g. 2e-5.")
        value = float(value)
    elif tp.startswith("str"):
        if not isinstance(value, str):
            value = str(value) if isinstance(value, (int, float)) and "path" in where else value
            if not isinstance(value, str):
                raise ConfigError(f"{where} = {value!r} is not text", "Quote it as a string.")
    elif tp.startswith("list"):
        if isinstance(value, str):
            value = value.split()
        if not isinstance(value, list):
            raise ConfigError(f"{where} = {value!r} is not a list", "Write a YAML list, e.g. [time, ln].")
    elif tp.startswith("dict") and not isinstance(value, dict):
        raise ConfigError(f"{where} = {value!r} is not a mapping", "Write a YAML mapping.")
    choices = meta.get("choices")
    if choices and value not in choices:
        shown = ", ".join(str(c) for c in choices if c is not None)
        hint = difflib.get_close_matches(str(value), [str(c) for c in choices if c is not None], n=1)
        raise ConfigError(f"{where} = {value!r} is not one of {shown}",
                          f"Did you mean '{hint[0]}'?" if hint else f"Use one of: {shown}.")
    lo, hi, above = meta.get("lo"), meta.get("hi"), meta.get("above")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if above is not None and value <= above:
            raise ConfigError(f"{where} = {value!r} must be above {above:g}", f"Use a value > {above:g}.")
        if lo is not None and value < lo:
            raise ConfigError(f"{where} = {value!r} is below the minimum {lo}", f"Use a value ≥ {lo}.")
        if hi is not None and value > hi:
            raise ConfigError(f"{where} = {value!r} is above the maximum {hi}", f"Use a value ≤ {hi}.")
    return value


def check_section(name: str, cls: type, raw: Any, errors: list[ConfigError]) -> Any:
    """The section built from its valid keys; each unknown key or bad value is added to `errors`."""
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        errors.append(ConfigError(f"preset section '{name}' is a {type(raw).__name__}, not a mapping",
                                  f"Write '{name}:' followed by indented 'key: value' lines."))
        return cls()
    valid = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in valid:
            errors.append(ConfigError(f"unknown key '{name}.{key}'", _suggest(str(key), list(valid))))
            continue
        with collecting(errors):
            kwargs[key] = _coerce(f"{name}.{key}", value, valid[key])
    return cls(**kwargs)


def check_quant(raw: Any, errors: list[ConfigError]) -> str:
    quant = "none" if raw in (None, False) else raw
    if quant in QUANTS:
        return quant
    hint = difflib.get_close_matches(str(quant), QUANTS, n=1)
    errors.append(ConfigError(f"quant = {quant!r} is not one of {', '.join(QUANTS)}",
                              f"Did you mean '{hint[0]}'?" if hint else f"Use one of: {', '.join(QUANTS)}."))
    return "none"


def check_objective(raw: Any, errors: list[ConfigError]) -> ObjectiveSection | None:
    """The objective section, validated by `ObjectiveConfig` (its mistakes join the others); None if refused."""
    try:
        cfg = ObjectiveConfig.from_dict(raw)
    except ConfigError as exc:
        errors.append(exc)
        return None
    return ObjectiveSection(**{**cfg.to_dict(), "rewards": list(cfg.to_dict()["rewards"])})


_KEY = re.compile(r"\b(?:model|method|data|train|output|objective)\.\w+|\bquant\b")


def from_dict(raw: dict[str, Any], *, source: str | None = None, need_paths: bool = True) -> Preset:
    """Build and validate a Preset from a parsed YAML mapping; every mistake is reported, at once.

    `need_paths=False` accepts a preset without model.path/data.path (what `estimate` reads).
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"preset {source or ''} is not a YAML mapping".replace("  ", " "),
                          "Start from `rwkv-tune presets copy NAME preset.yaml` or `rwkv-tune init`.")
    errors: list[ConfigError] = []
    top = ["model", "method", "quant", "data", "train", "output", "objective", "provenance"]
    for key in raw:
        if key not in top:
            errors.append(ConfigError(f"unknown preset section '{key}'", _suggest(str(key), top)))
    model_raw = raw.get("model")
    if isinstance(model_raw, str):
        model_raw = {"path": model_raw}
    method_raw = raw.get("method")
    if isinstance(method_raw, str):
        method_raw = {"name": method_raw}
    given = {**raw, "model": model_raw, "method": method_raw}
    sections = {name: check_section(name, cls, given.get(name), errors) for name, cls in SECTIONS.items()
                if name != "objective"}
    objective = check_objective(raw.get("objective"), errors)
    sections["objective"] = objective or ObjectiveSection()
    preset = Preset(**sections, quant=check_quant(raw.get("quant", "none"), errors), source=source,
                    provenance=raw.get("provenance"))
    # A refused value was replaced by its default: skip cross-field mistakes that name a refused key.
    refused = {k for e in errors for k in _KEY.findall(e.message)} | ({"objective.type"} if objective is None else set())
    errors += [e for e in cross_field_errors(preset, need_paths=need_paths)
               if not refused & set(_KEY.findall(e.message))]
    raise_all(errors)
    return preset


def cross_field_errors(p: Preset, *, need_paths: bool = True) -> list[ConfigError]:
    """Mistakes that involve more than one key (the model file is checked later by `check_against_spec`)."""
    errors: list[ConfigError] = []
    t = p.train
    if need_paths and not p.model.path:
        errors.append(ConfigError("model.path is empty", "Set it to your base model .pth (rwkv-tune inspect shows what it is)."))
    if need_paths and not p.data.path and p.data.type != "dummy":
        errors.append(ConfigError("data.path is empty", "Set it to a binidx prefix or a .jsonl/.txt file (see rwkv-tune data)."))
    if t.op == "cuda" and t.precision != "bf16":
        errors.append(ConfigError(f"train.op = cuda needs train.precision = bf16, not {t.precision}",
                                  "Set train.precision: bf16, or train.op: torch."))
    if p.method_name == "state" and t.op not in STATE_GRAD_OPS:
        errors.append(ConfigError(f"method state needs an op that returns the initial-state gradient; train.op = {t.op} does "
                                  "not", f"Use train.op: {' or '.join(STATE_GRAD_OPS[:3])}."))
    if (t.devices > 1 or t.nodes > 1) and not t.strategy.startswith("deepspeed"):
        errors.append(ConfigError(f"train.devices = {t.devices}, train.nodes = {t.nodes} needs a DeepSpeed strategy, not "
                                  f"'{t.strategy}'", "Set train.strategy: deepspeed_stage_1 (or _2, _3)."))
    if t.strategy.startswith("deepspeed_stage_3") and p.quant != "none":
        errors.append(ConfigError(f"quant = {p.quant} cannot run under train.strategy = {t.strategy}: ZeRO-3 partitions "
                                  "every weight, and quantized weights cannot be split across ranks",
                                  "Use train.strategy: deepspeed_stage_2 (ZeRO-2 shards only what trains), or quant: none."))
    if t.hostfile and t.strategy == "single":
        errors.append(ConfigError(f"train.hostfile = {t.hostfile} needs a DeepSpeed strategy, not 'single'",
                                  "Set train.strategy: deepspeed_stage_1 (or _2, _3), or remove train.hostfile."))
    if t.train_type == "infctx":
        if t.chunk_ctx >= p.data.ctx_len:
            errors.append(ConfigError(f"train.chunk_ctx = {t.chunk_ctx} must be smaller than data.ctx_len = {p.data.ctx_len} "
                                      "for infctx", f"Set train.chunk_ctx to e.g. {max(16, p.data.ctx_len // 4)}."))
        if p.data.ctx_len % t.chunk_ctx:
            errors.append(ConfigError(f"data.ctx_len = {p.data.ctx_len} is not a multiple of train.chunk_ctx = {t.chunk_ctx}",
                                      "Pick a chunk_ctx that divides ctx_len."))
    if p.data.dataload == "only" and t.micro_bsz != 1:
        errors.append(ConfigError(f"data.dataload = only trains one unpadded document per step, so train.micro_bsz must "
                                  f"be 1, not {t.micro_bsz}", "Set train.micro_bsz: 1, or data.dataload: pad."))
    if t.warmup_steps >= p.total_steps and t.warmup_steps > 0:
        errors.append(ConfigError(f"train.warmup_steps = {t.warmup_steps} is not below the run's {p.total_steps} steps",
                                  "Lower warmup_steps or raise epoch_steps/epoch_count."))
    if t.lr_schedule != "constant" and t.lr_final > t.lr_init:
        errors.append(ConfigError(f"train.lr_final = {t.lr_final} is above train.lr_init = {t.lr_init} for {t.lr_schedule}",
                                  "Decaying schedules go from lr_init down to lr_final; swap them or use constant."))
    errors += method_errors(p.method, p.quant)
    from rwkv_tune.peft.export_rules import check_export  # torch-free

    with collecting(errors):
        check_export(p.output.export, p.method.name, p.method.mode, p.method.train_parts, p.quant)
    errors += objective_errors(p)
    return errors


def objective_errors(p: Preset) -> list[ConfigError]:
    """The objective against the data it reads (dpo/orpo: pairs; grpo: prompts; sft: neither) and the method."""
    kind, data_type = p.objective.type, p.data.type
    wanted = OBJECTIVE_DATA.get(kind)
    if wanted and data_type not in (*wanted, "auto"):
        example = "prompt/chosen/rejected" if wanted[0] == "pairs" else "prompt/answer"
        return [ConfigError(f"objective.type = {kind} reads {wanted[0]} data, but data.type is {data_type!r}",
                            f"Set data.type: {wanted[0]} (or auto) and data.path to a {example} .jsonl file.")]
    if not wanted and data_type in ("pairs", "prompts"):
        fits = "dpo or orpo" if data_type == "pairs" else "grpo"
        return [ConfigError(f"data.type = {data_type} needs objective.type {fits}; objective.type is {kind}",
                            f"Set objective.type: {fits.split()[0]} (or data.type for next-token training).")]
    if kind != "sft" and p.data.dataload == "only":
        return [ConfigError(f"data.dataload = only is for next-token training, not objective.type = {kind}",
                            "Remove data.dataload (pairs and prompts are batched by the objective).")]
    if kind != "sft" and p.train.strategy.startswith("deepspeed_stage_3"):
        return [ConfigError(f"objective.type = {kind} is not supported with train.strategy = {p.train.strategy} yet "
                            "(the reference policy's tensors are not gathered under ZeRO-3)",
                            "Use deepspeed_stage_1 or deepspeed_stage_2 (or single).")]
    if kind != "sft" and p.train.train_type == "infctx":
        return [ConfigError(f"train.train_type = infctx is for next-token training, not objective.type = {kind}",
                            "Set train.train_type: normal.")]
    return []


def check_cross_fields(p: Preset) -> None:
    """Raise every cross-field mistake of a preset at once."""
    raise_all(cross_field_errors(p))


def check_machine(p: Preset) -> None:
    """Checks that depend on this machine's packages (run at train time, not when a preset is read)."""
    errors: list[ConfigError] = []
    if p.quant != "none" and importlib.util.find_spec("bitsandbytes") is None:
        errors.append(ConfigError(f"quant = {p.quant} needs bitsandbytes, which is not installed",
                                  "pip install bitsandbytes, or set quant: none."))
    if p.train.strategy.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        errors.append(ConfigError(f"train.strategy = {p.train.strategy} needs deepspeed, which is not installed",
                                  "pip install deepspeed, or set train.strategy: single."))
    raise_all(errors)


def check_against_spec(p: Preset, spec: Any) -> None:
    """Checks that need the model's detected architecture (ModelSpec); all mistakes are raised together."""
    errors: list[ConfigError] = []
    recorded = p.model.spec or {}
    actual = spec.to_dict()
    for key, value in recorded.items():
        if key in actual and actual[key] != value and key not in ("params", "size_name", "dtype"):
            errors.append(ConfigError(f"model.spec.{key} = {value!r} in the preset, but {p.model.path} has {actual[key]!r}",
                                      "The preset was made for another model (or the file changed): use a preset for "
                                      "this model, or delete model.spec from the preset (it is re-detected)."))
    if p.method.name == "bat" or (p.method_name == "miss" and p.method.mode == "bat"):
        indivisible = [(name, dim) for name, dim in (("n_embd", spec.n_embd), ("dim_ffn", spec.dim_ffn))
                       if dim % p.method.r]
        for name, dim in indivisible[:1]:
                errors.append(ConfigError(f"method.mode = bat needs {name} ({dim}) divisible by method.r = {p.method.r}",
                                          "Pick an r that divides both n_embd and dim_ffn, or use mode: bone."))
    if p.method_name in ("lora", "pissa") and p.method.r > spec.n_embd:
        errors.append(ConfigError(f"method.r = {p.method.r} is larger than n_embd = {spec.n_embd}",
                                  f"Use r ≤ {spec.n_embd} (typical: 8…128)."))
    if p.train.op == "cuda" and spec.head_size != 64:
        errors.append(ConfigError(f"train.op = cuda needs head_size 64; this model has {spec.head_size}",
                                  "Set train.op: torch (or fla)."))
    raise_all(errors)
