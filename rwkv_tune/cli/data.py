"""`rwkv-tune data`: prepare and inspect training data."""

from __future__ import annotations

import typer

app = typer.Typer(help="Prepare (tokenize to binidx) and inspect training data.", no_args_is_help=True)
