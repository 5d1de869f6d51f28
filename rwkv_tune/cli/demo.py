"""`rwkv-tune demo`: a tiny RWKV-7 learns a bundled corpus on CPU, then merge, verify and generate."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from rwkv_tune.cli._common import console, user_errors


def demo(
    out: Path = typer.Option(Path("rwkv-tune-demo"), "--out", help="Where the model, data and run go."),
    method: str = typer.Option("disha", "--method", help="lora | pissa | disha | miss | state | full."),
    no_tui: bool = typer.Option(False, "--no-tui", help="Plain progress output instead of the dashboard."),
    steps: int = typer.Option(60, "--steps", min=2, help="Optimizer steps (about a second each on a laptop CPU)."),
) -> None:
    """The whole workflow offline in about a minute: data → train → merge → verify → generate."""
    from rich.markup import escape

    from rwkv_tune.demo import DEMO_PROMPT, run_demo

    use_tui = not no_tui and sys.stdout.isatty() and os.environ.get("RWKV_TUNE_NO_TUI") != "1"
    with user_errors():
        result = run_demo(out, method=method, use_tui=use_tui, steps=steps, console=console)
    merged = escape(str(result.merged))
    console.print(f"\n[bold]loss[/] {result.loss_before:.3f} → [bold green]{result.loss_after:.3f}[/] "
                  f"(on the demo corpus, base vs merged)")
    console.print(f"[bold]merged[/] {merged} ({'verified' if result.verified else '[yellow]not verified[/]'})",
                  soft_wrap=True)
    console.print(f"[bold]sample[/] {escape(DEMO_PROMPT + result.sample)}", soft_wrap=True)
    console.print(f"\nNext: [bold]rwkv-tune inspect {merged}[/]  ·  "
                  f"[bold]rwkv-tune generate {merged} --prompt 'A good recipe'[/]", soft_wrap=True)
