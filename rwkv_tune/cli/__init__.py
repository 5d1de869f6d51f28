"""The `rwkv-tune` command: a thin Typer layer over the library.

Each command lives in its own module and imports torch (or anything heavy) only inside the
function body, so `rwkv-tune --help` stays fast.
"""

from __future__ import annotations

import os
import sys

import typer

from rwkv_tune import __version__
from rwkv_tune.cli import bench as bench_cmd
from rwkv_tune.cli import data as data_cmd
from rwkv_tune.cli import demo as demo_cmd
from rwkv_tune.cli import doctor as doctor_cmd
from rwkv_tune.cli import estimate as estimate_cmd
from rwkv_tune.cli import export as export_cmd
from rwkv_tune.cli import generate as generate_cmd
from rwkv_tune.cli import init as init_cmd
from rwkv_tune.cli import inspect as inspect_cmd
from rwkv_tune.cli import merge as merge_cmd
from rwkv_tune.cli import presets as presets_cmd
from rwkv_tune.cli import train as train_cmd
from rwkv_tune.cli import watch as watch_cmd
from rwkv_tune.cli._common import run_guarded

app = typer.Typer(
    name="rwkv-tune",
    help="Fine-tune RWKV-5/6/7 language models: inspect, estimate, train, merge.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rwkv-tune {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
) -> None:
    """Fine-tune RWKV-5/6/7 language models."""
    if debug:
        os.environ["RWKV_TUNE_DEBUG"] = "1"


app.command("init")(init_cmd.init)
app.command("train")(train_cmd.train)
app.command("watch")(watch_cmd.watch)
app.command("inspect")(inspect_cmd.inspect)
app.command("merge")(merge_cmd.merge)
app.command("export")(export_cmd.export)
app.command("estimate")(estimate_cmd.estimate)
app.command("generate")(generate_cmd.generate)
app.command("demo")(demo_cmd.demo)
app.command("doctor")(doctor_cmd.doctor)
app.command("bench")(bench_cmd.bench)
app.add_typer(data_cmd.app, name="data")
app.add_typer(presets_cmd.app, name="presets")


def main() -> None:
    """Console-script entry point."""
    if "--debug" in sys.argv[1:]:
        os.environ["RWKV_TUNE_DEBUG"] = "1"
    run_guarded(app)
