"""Answers: a raw reply (typed text, a flag, a picked choice) → a checked value in a new state, or ConfigError."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rwkv_tune.errors import ConfigError
from rwkv_tune.estimate.gpus import GPU, find_gpu
from rwkv_tune.objectives.config import OBJECTIVES
from rwkv_tune.preset import PRECISIONS, STRATEGIES, TRAIN_TYPES
from rwkv_tune.wizard.defaults import current_estimate, resolved
from rwkv_tune.wizard.detect import DataInfo, inspect_data, jsonl_kind
from rwkv_tune.wizard.flow import build_preset
from rwkv_tune.wizard.methods import ALIASES, METHODS, QUANT_HELP
from rwkv_tune.wizard.state import CPU, FLAG_ONLY, FLOW, NO_GPU, State


def _int(key: str, raw: Any, lo: int = 1) -> int:
    try:
        value = int(str(raw).strip().replace("_", "")) if not isinstance(raw, int) or isinstance(raw, bool) else raw
    except ValueError:
        raise ConfigError(f"{key} = {raw!r} is not a whole number", "Type a number, e.g. 64.") from None
    if value < lo:
        raise ConfigError(f"{key} = {value} is below {lo}", f"Use {lo} or more.")
    return value


def _float(key: str, raw: Any) -> float:
    try:
        value = float(str(raw).strip()) if not isinstance(raw, (int, float)) or isinstance(raw, bool) else float(raw)
    except ValueError:
        raise ConfigError(f"{key} = {raw!r} is not a number", "Type a number, e.g. 1e-4.") from None
    if value < 0:
        raise ConfigError(f"{key} = {value} is negative", "Use 0 or more.")
    return value


def _bool(key: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("y", "yes", "true", "1", "on"):
        return True
    if text in ("n", "no", "false", "0", "off"):
        return False
    raise ConfigError(f"{key} = {raw!r} is not yes/no", "Answer yes or no.")


def _choice(key: str, raw: Any, choices: Sequence[str]) -> str:
    value = str(raw).strip().lower()
    if value not in choices:
        raise ConfigError(f"{key} = {raw!r} is not one of {', '.join(choices)}", f"Use one of: {', '.join(choices)}.")
    return value


def _gpu(raw: Any, state: State) -> GPU | str | None:
    if raw is None or isinstance(raw, GPU):
        return raw
    text = str(raw).strip()
    if text.lower() in ("", NO_GPU, "any"):
        return None
    if text.lower() in (CPU, "this cpu"):
        return CPU
    for g in state.gpus:
        if g.name.lower() == text.lower():
            return g
    return find_gpu(text)


def _parse(state: State, key: str, raw: Any, must_exist: bool) -> State:
    """Turn one raw answer into its value (and for model/data, what the file is); raise ConfigError if bad."""
    answers = dict(state.answers)
    if key == "model":
        from rwkv_tune.spec import detect

        path = str(raw).strip().strip("'\"")
        if not path:
            raise ConfigError("no model file given", "Type the path of the base model .pth.")
        spec = detect(Path(path).expanduser())
        return replace(state, answers={**answers, key: path}, spec=spec)
    if key == "data":
        path = str(raw).strip().strip("'\"")
        if not path:
            raise ConfigError("no training data given", "Type a binidx prefix or a .jsonl/.txt file or folder.")
        info = inspect_data(path)
        warnings = state.warnings
        if info.kind == "missing":
            if must_exist:
                raise ConfigError(f"data {path} does not exist", "Give a binidx prefix (data/train for data/train.bin "
                                  "+ .idx), a .jsonl/.txt file or a folder.")
            warnings += (f"data {path} does not exist yet; create it before training",)
        check_objective_data(answers.get("objective", "sft"), info)
        return replace(state, answers={**answers, key: info.path}, data=info, warnings=warnings)
    if key == "objective":
        text = str(raw).strip().lower()
        value: Any = _choice("objective", {"preferences": "dpo", "rewards": "grpo"}.get(text, text), OBJECTIVES)
    elif key == "gpu":
        value = _gpu(raw, state)
    elif key == "method":
        value = ALIASES.get(str(raw).strip().lower(), str(raw).strip().lower())
        _choice("method", value, METHODS)
    elif key == "quant":
        value = _choice("quant", raw, tuple(QUANT_HELP))
    elif key in ("precision", "strategy", "train_type"):
        value = _choice(key, raw, {"precision": PRECISIONS, "strategy": STRATEGIES, "train_type": TRAIN_TYPES}[key])
    elif key in ("grad_cp", "more"):
        value = _bool(key, raw)
    elif key in ("lr_init", "lr_final"):
        value = _float(key, raw)
    elif key == "chunk_ctx":
        value = _int(key, raw, 16)
    elif key in ("rank", "ctx_len", "micro_bsz", "devices", "epoch_steps", "epoch_count", "accumulate_grad_batches"):
        value = _int(key, raw)
    elif key == "out":
        value = str(raw).strip().strip("'\"") or "preset.yaml"
        if Path(value).expanduser().is_dir():
            raise ConfigError(f"--out {value} is a folder", f"Name a file, e.g. {Path(value) / 'preset.yaml'}.")
    else:
        raise ConfigError(f"unknown wizard answer {key!r}", f"Use one of: {', '.join((*FLOW, *FLAG_ONLY))}.")
    return replace(state, answers={**answers, key: value})


def check_objective_data(objective: str, info: DataInfo) -> None:
    """Refuse data that the objective cannot read: dpo/orpo want pairs, grpo prompts (a .jsonl file's first record)."""
    wanted = {"dpo": "pairs", "orpo": "pairs", "grpo": "prompts"}.get(objective)
    if wanted is None or info.kind == "missing":
        return
    found = jsonl_kind(info.path) if info.kind == "jsonl" else None
    if found != wanted:
        example = '{"prompt", "chosen", "rejected"}' if wanted == "pairs" else '{"prompt", "answer"}'
        raise ConfigError(f"{objective} trains on {wanted}, but {info.path} holds {found or info.kind} records",
                          f"Give a .jsonl file of {example} records, or choose another kind of training.")


def answer(state: State, key: str, raw: Any, *, must_exist: bool = True) -> State:
    """Record one answer; a bad one (or one the preset or estimate rejects) raises ConfigError, state unchanged."""
    return answer_many(state, {key: raw}, must_exist=must_exist)


def answer_many(state: State, raw: Mapping[str, Any], *, must_exist: bool = True) -> State:
    """Record several answers (e.g. the command-line flags), in flow order, then check them together."""
    order = {k: i for i, k in enumerate((*FLOW, *FLAG_ONLY))}
    new = state
    for key in sorted(raw, key=lambda k: order.get(k, -1)):
        new = _parse(new, key, raw[key], must_exist)
    if new.spec is not None and set(raw) - {"data", "out", "gpu", "more"}:
        build_preset(new)  # the preset's own checks (bat divisibility, devices vs strategy, lr order, …)
        current_estimate(new)  # and the estimator's (e.g. infctx on RWKV-5)
    return new


def apply_fix(state: State, flags: str) -> State:
    """Apply an estimate fix such as '--quant nf4 --micro-bsz 2'; micro_bsz changes keep the batch via accumulation."""
    words = flags.split()
    raw: dict[str, Any] = {}
    values = resolved(state)
    i = 0
    while i < len(words):
        flag = words[i].removeprefix("--").replace("-", "_")
        if flag in ("grad_cp", "no_grad_cp"):
            raw["grad_cp"] = flag == "grad_cp"
            i += 1
            continue
        raw[flag] = words[i + 1]
        i += 2
    if "micro_bsz" in raw:
        b = int(raw["micro_bsz"])
        raw["accumulate_grad_batches"] = max(1, values["accumulate_grad_batches"] * values["micro_bsz"] // b)
    return answer_many(state, raw)
