"""Torch-free facts about a run's data for the dry run and the dashboard: how many tokens it has."""

from __future__ import annotations


def data_tokens(path: str) -> int | None:
    """Tokens in a binidx dataset (read from its index, instantly); None for anything not tokenized yet."""
    from rwkv_tune.data.binidx import is_binidx, read_binidx

    if path and is_binidx(path):
        return int(read_binidx(path).num_tokens)
    return None
