"""Torch-free facts about a run's data for the dry run and the dashboard: how many tokens it has."""

from __future__ import annotations


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
