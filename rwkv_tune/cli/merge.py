"""`rwkv-tune merge`: adapter + base model → an official-format model, verified."""

from __future__ import annotations

import typer


def merge() -> None:
    """Merge an adapter into its base model (not implemented yet)."""
    raise typer.Exit(1)
