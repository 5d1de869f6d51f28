"""What every command shares: one-line user errors with exit code 2, a console, JSON output."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console

from rwkv_tune.errors import ConfigErrors, UserError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def debug_enabled() -> bool:
    return os.environ.get("RWKV_TUNE_DEBUG") == "1"


def print_user_error(exc: UserError) -> None:
    """One red line per mistake (a ConfigErrors carries several); the message's own brackets stay text."""
    from rich.markup import escape

    for line in exc.lines() if isinstance(exc, ConfigErrors) else [exc.one_line()]:
        err_console.print(f"[bold red]error:[/] {escape(line)}", soft_wrap=True, markup=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a UserError inside a command into one red line and exit code 2."""
    import typer

    try:
        yield
    except UserError as exc:
        if debug_enabled():
            raise
        print_user_error(exc)
        raise typer.Exit(exc.exit_code) from None


def run_guarded(app: Callable[..., Any]) -> None:
    """Run the Typer app; user errors that escape a command still end as one line + exit 2."""
    try:
        app()
    except UserError as exc:
        if debug_enabled():
            raise
        print_user_error(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)


def print_json(obj: Any) -> None:
    """One JSON object on stdout, nothing else (for scripts)."""
    sys.stdout.write(json.dumps(obj, indent=None, default=str) + "\n")
