"""`rwkv-tune estimate`: VRAM and time for a fine-tuning config, with or without the model file."""

from __future__ import annotations

import typer


def estimate() -> None:
    """Estimate VRAM and time (not implemented yet)."""
    raise typer.Exit(1)
