"""`rwkv-tune bench`: forward+backward tokens/s and peak memory per WKV op and model shape."""

from __future__ import annotations

import typer


def bench() -> None:
    """Benchmark the WKV ops (not implemented yet)."""
    raise typer.Exit(1)
