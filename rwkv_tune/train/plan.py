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
