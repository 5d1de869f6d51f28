"""`rwkv-tune watch RUN_DIR`: attach the dashboard to a running run, or review a finished one."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import typer

from rwkv_tune.cli._common import console, user_errors
from rwkv_tune.errors import UserError


def _metrics_path(run_dir: Path) -> Path:
    if run_dir.is_dir():
        return run_dir / "metrics.jsonl"
    if run_dir.is_file():
        return run_dir
    raise UserError(f"run directory {run_dir} does not exist",
                    "Pass the run's output.dir (the folder with metrics.jsonl).")


def watch(
    run_dir: Path = typer.Argument(..., help="The run directory (output.dir), or its metrics.jsonl."),
    no_follow: bool = typer.Option(False, "--no-follow", help="Read what is there and stop tailing."),
    plain: bool = typer.Option(False, "--plain", help="Print a plain summary instead of the dashboard."),
) -> None:
    """Watch a run: the live dashboard on a terminal, a plain summary otherwise."""
    with user_errors():
        metrics = _metrics_path(run_dir)
        root = metrics.parent
        tty = sys.stdout.isatty() and os.environ.get("RWKV_TUNE_NO_TUI") != "1"
        if plain or not tty:
            if not metrics.exists():
                raise UserError(f"{metrics} does not exist yet",
                                "Start the run first, or wait until it writes its first event.")
            print_summary(metrics)
            return
        from rwkv_tune.tui.app import DashboardApp

        result = DashboardApp(root, follow=not no_follow).run()
        if metrics.exists():
            print_summary(metrics)
        if result == "detach":
            console.print(f"detached; training goes on. Attach again: rwkv-tune watch {root}")


def print_summary(metrics: Path) -> None:
    """Fold the events of a metrics file and print the plain summary."""
    from rwkv_tune.runs import read_events
    from rwkv_tune.tui.format import summary_lines
    from rwkv_tune.tui.merging import adopt_merge_report
    from rwkv_tune.tui.state import RunState

    state = RunState()
    for event in read_events(metrics):
        state.apply(event)
    adopt_merge_report(state, metrics.parent)
    for line in summary_lines(state, now=time.time()):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
