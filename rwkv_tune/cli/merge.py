"""`rwkv-tune merge`: adapter + base model → an official-format model, verified.

    rwkv-tune merge RUN_DIR [--out OUT]
    rwkv-tune merge --base BASE.pth --adapter ADAPTER --out OUT.pth [--lora-alpha A] [--pissa-init INIT.pth]
                    [--quant int8|nf4] [--format pth|safetensors] [--no-verify]
"""

from __future__ import annotations

from pathlib import Path

import typer

from rwkv_tune.cli._common import console, print_json, user_errors
from rwkv_tune.errors import ConfigError
from rwkv_tune.preset.schema import QUANTS


def merge(
    run_dir: Path | None = typer.Argument(None, help="A run directory: base, adapter and quant come from its "
                                          "preset.yaml; writes RUN_DIR/merged.pth.", show_default=False),
    base: Path | None = typer.Option(None, "--base", help="The base model the adapter was trained on "
                                     "(.pth/.safetensors)."),
    adapter: Path | None = typer.Option(None, "--adapter", help="Our adapter .safetensors, an RWKV-PEFT "
                                        "rwkv-N.pth, or a Hugging Face peft adapter folder."),
    out: Path | None = typer.Option(None, "--out", help="Where to write the merged model (default with RUN_DIR: "
                                    "RUN_DIR/merged.pth)."),
    lora_alpha: float | None = typer.Option(None, "--lora-alpha", help="RWKV-PEFT LoRA files only: the lora_alpha "
                                            "you trained with."),
    alpha: float | None = typer.Option(None, "--alpha", hidden=True, help="Old name of --lora-alpha."),
    r: int | None = typer.Option(None, "--r", help="RWKV-PEFT files only: the rank, checked against the file."),
    pissa_init: Path | None = typer.Option(None, "--pissa-init", help="RWKV-PEFT PiSSA: its init_pissa.pth "
                                           "(our adapters carry their init)."),
    quant: str | None = typer.Option(None, "--quant", help=f"{'|'.join(QUANTS)}. Default: the adapter's recorded "
                                     "quant, i.e. a quantized run merges into dequant(quant(W)), the weights it "
                                     "trained on; none forces the full-precision base."),
    fmt: str | None = typer.Option(None, "--format", help="pth|safetensors (default: from --out's suffix; "
                                   "pth for RUN_DIR)."),
    dtype: str | None = typer.Option(None, "--dtype", help="Output dtype bf16|fp16|fp32 (default: the base's, "
                                     "or the run's output.merge_dtype)."),
    force: bool = typer.Option(False, "--force", help="Merge even if the adapter was trained on another base."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Compare merged vs base+adapter logits on a "
                                "probe sequence (fails loudly above tolerance)."),
    state_only: bool = typer.Option(False, "--state-only", help="State tuning: write only the time_state tensors."),
    as_json: bool = typer.Option(False, "--json", help="Print the merge report as one JSON object."),
) -> None:
    """Merge an adapter into its base model; the output loads in every RWKV runtime."""
    with user_errors():
        if alpha is not None and lora_alpha is not None and alpha != lora_alpha:
            raise ConfigError(f"--alpha {alpha:g} and --lora-alpha {lora_alpha:g} disagree", "Pass --lora-alpha only.")
        lora_alpha = lora_alpha if lora_alpha is not None else alpha
        if quant is not None and quant not in QUANTS:
            raise ConfigError(f"--quant {quant} is not one of {', '.join(QUANTS)}", "Use --quant nf4 or --quant none.")
        if fmt is not None and fmt not in ("pth", "safetensors"):
            raise ConfigError(f"--format {fmt} is not one of pth, safetensors", "Use --format pth (the default).")
        run = None
        if run_dir is not None:
            from rwkv_tune.run_inputs import resolve_run_dir

            run = resolve_run_dir(run_dir, base=base, adapter=adapter, out=out, fmt=fmt)
            base, adapter, out = run.base, run.adapter, run.out
            dtype = dtype if dtype is not None else run.dtype
        elif base is None or adapter is None or out is None:
            missing = ", ".join(f"--{n}" for n, v in (("base", base), ("adapter", adapter), ("out", out)) if v is None)
            raise ConfigError(f"nothing to merge: give a run directory, or --base, --adapter and --out (missing "
                              f"{missing})", "Use `rwkv-tune merge RUN_DIR` or `rwkv-tune merge --base BASE.pth "
                              "--adapter ADAPTER --out OUT.pth`.")
        if run is not None and not as_json:
            pissa = f", PiSSA init from {run.pissa_init}" if run.pissa_init else ""
            say(f"run {run.run_dir}: base {run.base}, adapter {run.adapter.name} ({run.method}, quant {run.quant}"
                f"{pissa})")
        report = _merge_with_bar(base, adapter, out, dtype=dtype, alpha=lora_alpha, r=r, pissa_init=pissa_init,
                                 quant=quant, force=force, verify=verify, state_only=state_only, fmt=fmt,
                                 quiet=as_json)
    if as_json:
        print_json(report.to_dict())
        return
    a, o, v = report.adapter, report.out, report.verification
    say(f"[green]merged[/] {a['method']} adapter ({a['format']}) into {base.name} → {out} "
        f"({o['tensors']} tensors, {o['dtype']}, {o['format']}, {o['bytes'] / 2**20:.1f} MiB)")
    say(f"merged into {report.merged_into}")
    if v.get("checked"):
        rounding = f", {v['dtype_rounding']:.1e} of it for storing {v['dtype']}" if v.get("dtype_rounding") else ""
        say(f"verified: max logit difference {v['max_abs_diff']:.2e} ≤ tolerance {v['tolerance']:.1e}{rounding} "
            f"on {v['tokens']} tokens")
    else:
        say(f"[yellow]logits not compared:[/] {v.get('skipped')}")
    for note in report.notes:
        say(f"[yellow]note:[/] {note}")
    say(f"report: {report.report_path}")


def say(text: str) -> None:
    """One output line, never hard-wrapped (paths stay copyable)."""
    console.print(text, soft_wrap=True)


def _merge_with_bar(base: Path, adapter: Path, out: Path, *, quiet: bool, **kwargs):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from rwkv_tune.merge import merge as merge_files

    with Progress(TextColumn("[bold]merging"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console, transient=True, disable=quiet) as bar:
        task = bar.add_task("", total=None)

        def step(done: int, total: int, key: str) -> None:
            bar.update(task, completed=done, total=total, description=key)

        return merge_files(base, adapter, out, progress=step, **kwargs)
