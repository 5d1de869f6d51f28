"""Recommended answers: rank by model size, learning rates by method, the lightest quantisation that fits.

Each default follows the detected model and the answers so far; `resolved()` fills every unanswered key,
and `current_estimate()` is the VRAM/time estimate for those values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rwkv_tune.preset.schema import Preset
from rwkv_tune.spec import ModelSpec
from rwkv_tune.wizard.methods import method_parts
from rwkv_tune.wizard.state import CPU, FLAG_ONLY, FLOW, State

if TYPE_CHECKING:  # pragma: no cover
    from rwkv_tune.estimate import Estimate

_DEFAULT = Preset()  # the schema's defaults, for answers that have no recommendation of their own
_SCHEMA_DEFAULTS = {"method": _DEFAULT.method.name, "rank": _DEFAULT.method.r, "quant": _DEFAULT.quant,
                    "ctx_len": _DEFAULT.data.ctx_len, "micro_bsz": _DEFAULT.train.micro_bsz,
                    "grad_cp": _DEFAULT.train.grad_cp, "precision": _DEFAULT.train.precision,
                    "devices": _DEFAULT.train.devices, "strategy": _DEFAULT.train.strategy}


def recommended_rank(spec: ModelSpec | None, method: str) -> int:
    """LoRA/PiSSA: 32 below 1B parameters, else 64; MiSS: 64 (bat: the largest of 64, 32, … dividing the widths)."""
    if method in ("miss", "bat"):
        if method == "bat" and spec is not None:
            return next(r for r in (64, 32, 16, 8, 4, 2, 1) if spec.n_embd % r == 0 and spec.dim_ffn % r == 0)
        return 64
    return 32 if spec is not None and spec.params < 1e9 else 64


def recommended_lr(spec: ModelSpec | None, method: str) -> tuple[float, float]:
    """(lr_init, lr_final): state tuning ~1.0 → 0.01, adapters 1e-4 → 2e-5 (half that from 7B), full 1e-5 → 1e-6."""
    if method == "state":
        return 1.0, 0.01
    if method == "full":
        return 1e-5, 1e-6
    big = spec is not None and spec.params >= 6e9
    return (5e-5, 1e-5) if big else (1e-4, 2e-5)


def _peek(key: str, state: State, values: Mapping[str, Any]) -> Any:
    if key in values:
        return values[key]
    if key in state.answers:
        return state.answers[key]
    return {**_SCHEMA_DEFAULTS, "gpu": None, **FLAG_ONLY}.get(key)


def default(key: str, state: State, values: Mapping[str, Any] | None = None) -> Any:
    """The recommended answer to `key`, given the answers so far (`values`: resolved earlier keys)."""
    values = values or {}
    spec, method = state.spec, _peek("method", state, values)
    if key == "model":
        return state.found_models[0] if state.found_models else ""
    if key == "objective":
        return "sft"
    if key == "data":
        return ""
    if key == "gpu":
        return state.gpus[0] if state.gpus else None
    if key == "method":
        return "lora"
    if key == "rank":
        return recommended_rank(spec, method)
    if key == "quant":
        return _recommended_quant(state, values)
    if key == "precision" and _peek("gpu", state, values) == CPU:
        return "fp32"  # bf16 matmuls are slow on most CPUs
    if key in ("ctx_len", "micro_bsz", "grad_cp", "precision", *FLAG_ONLY):
        return _peek(key, State(), {})
    if key == "more":
        return False
    if key == "devices":
        return 1 if _peek("gpu", state, values) == CPU else max(1, len(state.gpus))
    if key == "strategy":
        return "single" if _peek("devices", state, values) == 1 else "deepspeed_stage_1"
    if key == "lr_init":
        return recommended_lr(spec, method)[0]
    if key == "lr_final":
        lr0, lr1 = recommended_lr(spec, method)
        return _peek("lr_init", state, values) * lr1 / lr0
    if key == "epoch_steps":
        docs = state.data.documents if state.data else None
        batch = _peek("micro_bsz", state, values) * _peek("devices", state, values) * _peek(
            "accumulate_grad_batches", state, values)
        return max(1, docs // batch) if docs else 1000
    if key == "epoch_count":
        return 4
    if key == "out":
        return "preset.yaml"
    raise KeyError(key)


def _recommended_quant(state: State, values: Mapping[str, Any]) -> str:
    """The lightest quantisation (none, int8, nf4) whose estimate fits the target GPU; none without a target."""
    if state.spec is None or _peek("method", state, values) == "full" or _peek("gpu", state, values) in (None, CPU):
        return "none"
    for quant in ("none", "int8", "nf4"):
        e = _estimate(state, {**values, "quant": quant})
        if e is not None and e.fits_target:
            return quant
    return "none"


def resolved(state: State) -> dict[str, Any]:
    """Every answer, with the recommended value where none was given."""
    values: dict[str, Any] = {}
    for key in (*FLOW, *FLAG_ONLY):
        values[key] = state.answers[key] if key in state.answers else default(key, state, values)
    return values


def _estimate(state: State, values: Mapping[str, Any]) -> Estimate | None:
    from rwkv_tune.estimate import estimate

    if state.spec is None:
        return None
    name, mode = method_parts(_peek("method", state, values))
    keys = ("quant", "ctx_len", "micro_bsz", "grad_cp", "precision", "strategy", "devices", *FLAG_ONLY)
    knobs = {k: _peek(k, state, values) for k in keys}
    if name == "full":
        knobs["quant"] = "none"
    if knobs["train_type"] != "infctx":
        knobs.pop("chunk_ctx")
    steps = {k: _peek(k, state, values) for k in ("epoch_steps", "epoch_count")}
    knobs["objective"] = _peek("objective", state, values) or "sft"
    gpu = _peek("gpu", state, values)
    return estimate(state.spec, method=name, mode=mode, rank=_peek("rank", state, values) or 64,
                    gpu=None if gpu == CPU else gpu, **{k: v for k, v in steps.items() if v}, **knobs)


def current_estimate(state: State) -> Estimate | None:
    """The estimate for the answers so far (recommended values for the rest); None before the model is known."""
    return _estimate(state, resolved(state)) if state.spec is not None else None
