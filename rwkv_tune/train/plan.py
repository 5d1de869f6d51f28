"""Torch-free facts about a run's data for the dry run and the dashboard: how many tokens it has."""

from __future__ import annotations

from pathlib import Path


def data_tokens(path: str) -> int | None:
    """Tokens in a binidx dataset (read from its index, instantly); None for raw files (not tokenized yet)."""
    if not path:
        return None
    from rwkv_tune.data.binidx import is_binidx, read_binidx

    if is_binidx(path):
        return int(read_binidx(path).num_tokens)
    if Path(path).is_file() and Path(path).suffix in (".txt", ".jsonl", ".json"):
        return None
    return None
