"""`rwkv-tune estimate`: VRAM and time for a fine-tuning config, with or without the model file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from rwkv_tune.cli._common import console, print_json, user_errors
from rwkv_tune.errors import ConfigError
from rwkv_tune.preset.schema import key_help

if TYPE_CHECKING:  # pragma: no cover
    from rwkv_tune.estimate import Estimate


def estimate(
    preset: Path | None = typer.Argument(None, help="A preset YAML; flags override its values."),
    model: Path | None = typer.Option(None, "--model", "-m", help="The base model file (.pth/.safetensors)."),
    size: str | None = typer.Option(None, "--size", help="A released model without its file: 0.1B 0.4B 1.5B 2.9B 7B 14B (v7)."),
    version: int | None = typer.Option(None, "--version", help="RWKV version for --size: 5, 6 or 7 (default 7)."),
    method: str | None = typer.Option(None, "--method", help=key_help("method.name")),
    rank: int | None = typer.Option(None, "--rank", "-r", help="Adapter rank (default 64)."),
    quant: str | None = typer.Option(None, "--quant", help=key_help("quant")),
    ctx_len: int | None = typer.Option(None, "--ctx-len", help="Training sequence length (default 1024)."),
    micro_bsz: int | None = typer.Option(None, "--micro-bsz", help="Sequences per GPU per step (default 1)."),
    grad_cp: bool | None = typer.Option(None, "--grad-cp/--no-grad-cp", help="Activation checkpointing (default on)."),
    precision: str | None = typer.Option(None, "--precision", help=key_help("train.precision")),
    strategy: str | None = typer.Option(None, "--strategy", help=key_help("train.strategy")),
    devices: int | None = typer.Option(None, "--devices", help="GPUs (needs a deepspeed strategy when > 1)."),
    train_type: str | None = typer.Option(None, "--train-type", help=key_help("train.train_type")),
    chunk_ctx: int | None = typer.Option(None, "--chunk-ctx", help="infctx chunk length."),
    objective: str | None = typer.Option(None, "--objective", help=key_help("objective.type")),
    group_size: int | None = typer.Option(None, "--group-size", help="GRPO: completions per prompt (default 8)."),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", help="GRPO: longest completion (default 256)."),
    gpu: str | None = typer.Option(None, "--gpu", help="Target card: '4090', 'A100 80GB', 'h100' or a size like 24GB."),
    tokens: int | None = typer.Option(None, "--tokens", help="Training tokens of the run (for the time)."),
    epoch_steps: int | None = typer.Option(None, "--epoch-steps", help="Optimizer steps per epoch."),
    epoch_count: int | None = typer.Option(None, "--epoch-count", help="Epochs."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Estimate peak VRAM per GPU, which GPUs fit, the largest micro_bsz/ctx_len, and the run time."""
    from rwkv_tune.estimate import estimate as run_estimate
    from rwkv_tune.estimate.from_preset import options_from_preset

    with user_errors():
        opts = options_from_preset(preset) if preset else {}
        if model is not None and size is not None:
            raise ConfigError("--model and --size both given", "Pass one: the file, or a released size.")
        if size is not None:
            opts.pop("model", None)
        if model is not None:
            opts.pop("size", None)
        flags = {"model": model, "size": size, "version": version, "method": method, "rank": rank, "quant": quant,
                 "ctx_len": ctx_len, "micro_bsz": micro_bsz, "grad_cp": grad_cp, "precision": precision,
                 "strategy": strategy, "devices": devices, "train_type": train_type, "chunk_ctx": chunk_ctx,
                 "objective": objective, "group_size": group_size, "max_new_tokens": max_new_tokens,
                 "gpu": gpu, "tokens": tokens, "epoch_steps": epoch_steps, "epoch_count": epoch_count}
        opts.update({k: v for k, v in flags.items() if v is not None})
        if "quant" in opts:
            opts["quant"] = opts["quant"].lower()
        result = run_estimate(**opts)
    if as_json:
        print_json(result.to_dict())
        return
    _render(result)


def _gib(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    return f"{seconds / 86400:.1f} days"


def _count(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def _objective_text(c) -> str:
    """' · dpo (2 sequences per sample)' etc.; '' for sft."""
    if c.objective in ("dpo", "orpo"):
        return f" · {c.objective} (chosen + rejected: {c.rows} sequences per micro-batch)"
    if c.objective == "grpo":
        return f" · grpo ({c.group_size} sampled sequences of ctx + {c.max_new_tokens} new tokens)"
    return ""


def _render(e: Estimate) -> None:
    from rich.markup import escape
    from rich.table import Table

    from rwkv_tune.estimate.fit import usable_gib
    from rwkv_tune.estimate.vram import DESCRIPTIONS, PHASES

    s, c, p = e.spec, e.config, e.vram.params
    method = f"{c.method}" + (f" ({c.mode})" if c.method == "miss" else "") + (f" r={c.rank}" if c.is_adapter else "")
    run = (f"{method} · quant {c.quant} · {c.precision} · ctx {c.ctx_len} × micro_bsz {c.micro_bsz} · "
           f"grad_cp {'on' if c.grad_cp else 'off'} · {c.strategy}" + (f" × {c.devices} GPUs" if c.devices > 1 else "")
           + (f" · infctx chunk {c.chunk_ctx}" if c.train_type == "infctx" else "") + _objective_text(c))
    name = s.variant_name if s.variant else f"RWKV-{s.version}"
    console.print(f"[bold]{name} {s.size_name}[/] (L{s.n_layer} × C{s.n_embd}, {_count(p.total)} params, "
                  f"{_count(p.trainable)} trained) · {escape(run)}")
    console.print(f"Peak VRAM ≈ [bold]{_gib(e.total_gib)} GiB[/] per GPU ({PHASES[e.vram.peak_phase]})")
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("component")
    table.add_column("GiB", justify="right")
    table.add_column("what", style="dim")
    for key, gib in e.breakdown.items():
        if gib >= 0.005:
            table.add_row(key.replace("_", " "), _gib(gib), DESCRIPTIONS[key])
    table.add_row("[bold]total[/]", f"[bold]{_gib(e.total_gib)}[/]", "")
    console.print(table)
    if e.vram.cpu_offload_gib:
        console.print(f"CPU RAM for offload: {_gib(e.vram.cpu_offload_gib)} GiB per GPU")
    fit_names = [g.name for g in e.gpus_fit]
    console.print("Fits: " + (", ".join(fit_names[:6]) + (f" and {len(fit_names) - 6} larger" if len(fit_names) > 6 else "")
                              if fit_names else "[red]no common GPU[/]"))
    t = e.target
    if t is not None and e.target_asked:
        status = "[green]fits[/]" if e.fits_target else f"[red]does not fit[/] ({_gib(usable_gib(t))} GiB usable)"
        bsz = (f"micro_bsz up to {e.max_micro_bsz}" if e.max_micro_bsz else "not even micro_bsz 1 fits") \
            + f" at ctx_len {c.ctx_len}"
        ctx = "" if e.max_ctx_len is None else (
            f"; ctx_len up to {e.max_ctx_len}" if e.max_ctx_len else "; not even ctx_len 16 fits") + f" at micro_bsz {c.micro_bsz}"
        console.print(f"On {t.name}: {status}; {bsz}{ctx}")
    if not e.fits_target and (e.target_asked or not e.gpus_fit):
        card = e.fix_gpu.name
        if e.fix:
            console.print(f"Fix for {card}: [bold]{escape(e.fix.flags)}[/] → {_gib(e.fix.total_gib)} GiB "
                          f"({escape(e.fix.change)})")
        for k in e.knobs[:6]:
            console.print(f"  {escape(k.knob)} {escape(k.change)} saves {_gib(k.saves_gib)} GiB → {_gib(k.total_gib)} GiB"
                          + (" (fits)" if k.fits else ""))
    tm = e.timing
    if tm.tokens_per_s:
        line = f"Speed (rough): ~{_count(tm.tokens_per_s)} tokens/s on {tm.gpu}" + (f" × {c.devices}" if c.devices > 1 else "")
        if tm.time_s:
            line += f"; {_count(tm.tokens)} tokens → {_duration(tm.time_s)}"
        console.print(line)
    elif not e.target_asked:
        console.print("Speed and time: pass --gpu CARD (they depend on the card; `rwkv-tune init` measures this CPU)")
    for note in e.notes:
        console.print(f"[dim]{escape(note)}[/]")
