"""`rwkv-tune merge`: adapter + base model → an official-format model, verified."""

from __future__ import annotations

from pathlib import Path

import typer

from rwkv_tune.cli._common import console, print_json, user_errors


def merge(
    base: Path = typer.Option(..., "--base", help="The base model the adapter was trained on (.pth/.safetensors)."),
    adapter: Path = typer.Option(..., "--adapter", help="Our adapter .safetensors, or an RWKV-PEFT rwkv-N.pth."),
    out: Path = typer.Option(..., "--out", help="Where to write the merged model (.pth or .safetensors)."),
    alpha: float | None = typer.Option(None, "--alpha", "--lora-alpha",
                                       help="RWKV-PEFT LoRA files only: the lora_alpha you trained with."),
    r: int | None = typer.Option(None, "--r", help="RWKV-PEFT files only: the rank, checked against the file."),
    pissa_init: Path | None = typer.Option(None, "--pissa-init", help="RWKV-PEFT PiSSA: its init_pissa.pth."),
    quant: str | None = typer.Option(None, "--quant", help="Merge into dequant(quant(W)) (int8|nf4|fp4), the "
                                     "weights a quantized run trained on. Default: the full-precision base."),
    dtype: str | None = typer.Option(None, "--dtype", help="Output dtype bf16|fp16|fp32 (default: the base's)."),
    force: bool = typer.Option(False, "--force", help="Merge even if the adapter was trained on another base."),
    verify: bool | None = typer.Option(None, "--verify/--no-verify",
                                       help="Compare merged vs base+adapter logits (default: models up to 0.5B)."),
    state_only: bool = typer.Option(False, "--state-only", help="State tuning: write only the time_state tensors."),
    as_json: bool = typer.Option(False, "--json", help="Print the merge report as one JSON object."),
) -> None:
    """Merge an adapter into its base model; the output loads in every RWKV runtime."""
    with user_errors():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from rwkv_tune.merge import merge as merge_files

        with Progress(TextColumn("[bold]merging"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.description}"), console=console, transient=True,
                      disable=as_json) as bar:
            task = bar.add_task("", total=None)

            def step(done: int, total: int, key: str) -> None:
                bar.update(task, completed=done, total=total, description=key)

            report = merge_files(base, adapter, out, dtype=dtype, progress=step, alpha=alpha, r=r,
                                 pissa_init=pissa_init, quant=quant, force=force, verify=verify,
                                 state_only=state_only)
    if as_json:
        print_json(report.to_dict())
        return
    a, o, v = report.adapter, report.out, report.verification
    console.print(f"[green]merged[/] {a['method']} adapter ({a['format']}) into {base.name} → {out} "
                  f"({o['tensors']} tensors, {o['dtype']}, {o['bytes'] / 2**20:.1f} MiB)")
    console.print(f"merged into {report.merged_into}")
    if v.get("checked"):
        console.print(f"verified: max logit difference {v['max_abs_diff']:.2e} (tolerance {v['tolerance']:.1e}) "
                      f"on {v['tokens']} tokens")
    else:
        console.print(f"[yellow]logits not compared:[/] {v.get('skipped')}")
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"report: {report.report_path}")
