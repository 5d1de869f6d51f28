"""`rwkv-tune doctor`: which parts of rwkv-tune this machine can run, and what is missing."""

from __future__ import annotations

import typer

from rwkv_tune.cli._common import console, print_json


def doctor(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Check Python, torch, GPUs, nvcc, ninja, DeepSpeed, bitsandbytes and fla."""
    from rich.markup import escape
    from rich.table import Table

    from rwkv_tune.doctor import run_checks

    checks = run_checks()
    if as_json:
        print_json([c.to_dict() for c in checks])
        return
    table = Table(title="rwkv-tune doctor", title_justify="left")
    for col in ("", "component", "version", "enables", "notes"):
        table.add_column(col)
    for c in checks:
        table.add_row("[green]✓[/]" if c.ok else "[yellow]✗[/]", escape(c.name), escape(c.version), escape(c.enables), escape(c.detail))
    console.print(table)
