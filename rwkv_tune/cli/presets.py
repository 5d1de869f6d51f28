"""`rwkv-tune presets list | show NAME | copy NAME DEST`: the ready presets shipped with rwkv-tune."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import typer
from rich.markup import escape

from rwkv_tune.cli._common import console, print_json, user_errors

app = typer.Typer(help="Ready presets: list them, show one, copy one to edit.", no_args_is_help=True,
                  add_completion=False, rich_markup_mode="rich")


@app.command("list")
def list_presets(as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table.")) -> None:
    """List the shipped presets: model, method, quantisation, context length and estimated VRAM."""
    from rich.table import Table

    from rwkv_tune.presets_library import available

    with user_errors():
        infos = available()
    if as_json:
        print_json({"presets": [i.to_dict() for i in infos]})
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("name", "model", "method", "quant", "ctx_len", "VRAM ≈", "fits"):
        table.add_column(column, no_wrap=True, justify="right" if column in ("ctx_len", "VRAM ≈") else "left")
    for i in infos:
        card = re.search(r"(\d+)GB", i.fits or "")
        table.add_row(i.name, i.model, i.method, i.quant, str(i.ctx_len or ""),
                      f"{i.gib:.1f} GiB" if i.gib is not None else "?", f"{card[1]} GB+" if card else "-")
    console.print(table)
    console.print("[dim]fits: the smallest common card it fits. Next: rwkv-tune presets copy NAME preset.yaml "
                  "--model M.pth --data D[/]")


@app.command()
def show(name: str = typer.Argument(..., help="A preset name from `rwkv-tune presets list`.")) -> None:
    """Print a shipped preset's YAML."""
    from rwkv_tune.presets_library import find

    with user_errors():
        info = find(name)
    sys.stdout.write(info.path.read_text(encoding="utf-8"))


@app.command()
def copy(
    name: str = typer.Argument(..., help="A preset name from `rwkv-tune presets list`."),
    dest: Path = typer.Argument(Path("preset.yaml"), help="Where to write it (a file, or a folder for NAME.yaml)."),
    model: str | None = typer.Option(None, "--model", "-m", help="Put this model path into the copy."),
    data: str | None = typer.Option(None, "--data", "-d", help="Put this data path into the copy."),
    force: bool = typer.Option(False, "--force", help="Overwrite DEST if it exists."),
) -> None:
    """Copy a shipped preset to edit (then set model.path and data.path, or pass --model/--data)."""
    from rwkv_tune.presets_library import copy as copy_preset

    with user_errors():
        written = copy_preset(name, dest, force=force, model=model, data=data)
    console.print(f"wrote {escape(str(written))}", soft_wrap=True)
    todo = [k for k, v in (("model.path", model), ("data.path", data)) if v is None]
    if todo:
        console.print(f"edit {' and '.join(todo)} in it, then: [bold]rwkv-tune train {escape(str(written))}[/]",
                      soft_wrap=True)
    else:
        console.print(f"next: [bold]rwkv-tune train {escape(str(written))}[/]", soft_wrap=True)
