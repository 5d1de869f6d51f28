"""Torch-free facts about a run: its data's token count, the dry-run plan, and what to change after an OOM."""

from __future__ import annotations

from typing import Any


def data_tokens(path: str) -> int | None:
    """Tokens in a binidx dataset (read from its index, instantly); None for anything not tokenized yet."""
    from rwkv_tune.data.binidx import is_binidx, read_binidx

    if path and is_binidx(path):
        return int(read_binidx(path).num_tokens)
    return None


MANY_PASSES = 50  # more passes than this over the same data: the model will likely memorize it


def data_documents(path: str) -> int | None:
    """Documents in a binidx dataset (from its index); None for anything not tokenized yet."""
    from rwkv_tune.data.binidx import is_binidx, read_binidx

    if path and is_binidx(path):
        return len(read_binidx(path))
    return None


def passes_over_data(p) -> float | None:
    """How many times a run goes over its data.

    pad/only mode: one sample is one document (cut or padded to ctx_len), so samples ÷ documents;
    get mode: ctx_len windows cut from the token stream, so tokens ÷ data tokens.
    """
    if p.data.dataload in ("pad", "only"):
        documents = data_documents(p.data.path)
        return p.total_steps * p.real_batch / documents if documents else None
    tokens = data_tokens(p.data.path)
    return p.total_tokens / tokens if tokens else None


def many_passes_warning(passes: float | None) -> str | None:
    """A warning for a plan that goes over the same data more than MANY_PASSES times."""
    if passes is None or passes <= MANY_PASSES:
        return None
    return (f"≈ {passes:,.0f} passes over the data: the model will likely memorize it; lower "
            "train.epoch_count or train.epoch_steps, or add data")


def estimate_options(p: Any) -> dict[str, Any]:
    """The preset's answers to `rwkv_tune.estimate.estimate`'s questions (model aside)."""
    return {"method": p.method.name, "rank": p.method.r, "mode": p.method.mode, "quant": p.quant,
            "ctx_len": p.data.ctx_len, "micro_bsz": p.train.micro_bsz, "grad_cp": p.train.grad_cp,
            "precision": p.train.precision, "strategy": p.train.strategy, "devices": p.train.devices,
            "accumulate_grad_batches": p.train.accumulate_grad_batches, "train_type": p.train.train_type,
            "chunk_ctx": p.train.chunk_ctx, "train_parts": list(p.method.train_parts),
            "objective": p.objective.type, "group_size": p.objective.group_size,
            "max_new_tokens": p.objective.max_new_tokens}


def dry_run_plan(p: Any) -> dict[str, Any]:
    """What the run will do, without torch: steps, tokens, passes over the data, VRAM estimate."""
    from rwkv_tune.estimate import estimate
    from rwkv_tune.preset import dump

    est = estimate(p.model.path, **estimate_options(p), epoch_steps=p.train.epoch_steps,
                   epoch_count=p.train.epoch_count)
    tokens = data_tokens(p.data.path)
    passes = passes_over_data(p)
    info = est.to_dict()
    return {
        "preset": dump(p),
        "spec": est.spec.to_dict(),
        "method": p.method_name, "quant": p.quant, "objective": p.objective.type,
        "trainable_params": info["trainable_params"],
        "total_steps": p.total_steps, "real_batch": p.real_batch, "tokens_per_step": p.real_batch * p.data.ctx_len,
        "total_tokens": p.total_tokens, "data_tokens": tokens,
        "passes_over_data": passes, "warnings": [w for w in (many_passes_warning(passes),) if w],
        "vram_gib": est.total_gib, "vram_breakdown": est.breakdown, "gpus_fit": info["gpus_fit"],
        "time": info["timing"],
    }


def out_of_memory_advice(p: Any, spec: Any) -> list[str]:
    """The preset changes that lower this run's peak memory most (from the estimator); [] if it cannot tell."""
    from rwkv_tune.errors import ConfigError
    from rwkv_tune.estimate import estimate
    from rwkv_tune.estimate.fit import oom_advice

    try:
        est = estimate(spec, **estimate_options(p))
    except ConfigError:
        return []
    return oom_advice(est.spec, est.config)


def run_plan(p: Any, *, total_params: int, trainable_params: int, data_tokens: int | None, device: str,
             world_size: int) -> dict[str, Any]:
    """The `plan` of a run_start event: steps, tokens, parameters (quantized weights at their logical size)."""
    tokens_per_step = p.real_batch * p.data.ctx_len
    total_tokens = tokens_per_step * p.total_steps
    passes = passes_over_data(p)
    if passes is None and data_tokens:  # data read from files, not binidx: tokens over tokens
        passes = total_tokens / data_tokens
    return {
        "total_steps": p.total_steps, "epoch_steps": p.train.epoch_steps, "epoch_count": p.train.epoch_count,
        "tokens_per_step": tokens_per_step, "total_tokens": total_tokens,
        "trainable_params": trainable_params, "total_params": total_params,
        "trainable_pct": 100.0 * trainable_params / max(1, total_params),
        "passes_over_data": passes, "device": device, "world_size": world_size,
    }


def out_of_memory_error(p: Any, spec: Any, during: str, *, kept: str) -> Any:
    """The resources error (exit 3) for an out-of-memory, with the estimator's advice."""
    from rwkv_tune.errors import ResourceError

    advice = out_of_memory_advice(p, spec)
    return ResourceError(f"out of GPU memory {during} (micro_bsz {p.train.micro_bsz}, ctx_len {p.data.ctx_len}, "
                         f"grad_cp {p.train.grad_cp}, quant {p.quant}); {kept}",
                         (f"Try {', '.join(advice)}; " if advice else "")
                         + f"`rwkv-tune estimate {p.source or 'PRESET'}` shows what fits.")
