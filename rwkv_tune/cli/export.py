"""`rwkv-tune export`: a model (or a run directory, merged on the way) → a GGUF file that llama.cpp runs.

    rwkv-tune export MODEL.pth --format gguf [--dtype f32|f16|bf16|q8_0] [--out MODEL.gguf]
    rwkv-tune export RUN_DIR --format gguf [--dtype ...] [--out RUN_DIR/merged-f16.gguf]
"""

from __future__ import annotations

from pathlib import Path

import typer

from rwkv_tune.cli._common import console, print_json, user_errors
from rwkv_tune.errors import ConfigError

FORMATS = ("gguf",)


def export(
    model_or_run: Path = typer.Argument(..., help="A model file (.pth/.safetensors), or a run directory whose "
                                        "adapter is merged into its base on the way.", show_default=False),
    fmt: str = typer.Option("gguf", "--format", help="Output format: gguf (llama.cpp)."),
    dtype: str = typer.Option("f16", "--dtype", help="Weight type: f32|f16|bf16|q8_0 (norms, biases and the "
                              "small RWKV tensors stay f32, as llama.cpp expects)."),
    out: Path | None = typer.Option(None, "--out", help="Where to write the .gguf file (default: beside the "
                                    "model, or in the run directory, named after it and the dtype)."),
    as_json: bool = typer.Option(False, "--json", help="Print the export report as one JSON object."),
) -> None:
    """Export an RWKV-6/7 model to GGUF for llama.cpp (RWKV-5 has no llama.cpp architecture)."""
    from rwkv_tune.export import DTYPES

    with user_errors():
        if fmt not in FORMATS:
            raise ConfigError(f"--format {fmt} is not one of {', '.join(FORMATS)}", "Use --format gguf.")
        if dtype not in DTYPES:
            raise ConfigError(f"--dtype {dtype} is not one of {', '.join(DTYPES)}", "Use --dtype f16 (the default).")
        adapter, merge_options = None, None
        model = model_or_run
        if model_or_run.is_dir():
            from rwkv_tune.run_inputs import resolve_run_dir

            run = resolve_run_dir(model_or_run)
            model, adapter, merge_options = run.base, run.adapter, {"dtype": run.dtype}
            target = out or model_or_run / f"merged-{dtype}.gguf"
            if not as_json:
                console.print(f"run {run.run_dir}: merging {run.adapter.name} ({run.method}) into {run.base}",
                              soft_wrap=True)
        else:
            target = out or model_or_run.with_name(f"{model_or_run.stem}-{dtype}.gguf")
        report = _export_with_bar(model, target, dtype=dtype, adapter=adapter, merge_options=merge_options,
                                  quiet=as_json)
    if as_json:
        print_json(report.to_dict())
        return
    types = ", ".join(f"{n} {name.lower()}" for name, n in report.tensor_types.items())
    console.print(f"[green]exported[/] {report.source} → {report.path} ({report.arch}, {report.dtype}, "
                  f"{report.bytes / 2**20:.1f} MiB, {report.tensors} tensors: {types})", soft_wrap=True)
    if report.merged_from:
        m = report.merged_from
        verified = f"verified, max logit difference {m['max_abs_diff']:.2e}" if m["verified"] else "not verified"
        console.print(f"merged {m['method']} adapter {m['adapter']} on the way ({verified})", soft_wrap=True)
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}", soft_wrap=True)
    console.print(f"run it: {report.run_command}", soft_wrap=True, markup=False)


def _export_with_bar(model: Path, out: Path, *, quiet: bool, **kwargs):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from rwkv_tune.export import export_gguf

    with Progress(TextColumn("[bold]exporting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console, transient=True, disable=quiet) as bar:
        task = bar.add_task("", total=None)

        def step(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=name)

        return export_gguf(model, out, progress=step, **kwargs)
