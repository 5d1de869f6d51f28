"""`rwkv-tune init`: the wizard that writes a commented preset.yaml (every question also has a flag)."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from rwkv_tune.cli._common import console, err_console, user_errors
from rwkv_tune.errors import ConfigError
from rwkv_tune.preset.schema import key_help

if TYPE_CHECKING:  # pragma: no cover
    from rwkv_tune.wizard import State


def init(
    model: str | None = typer.Option(None, "--model", "-m", help="Base model file (.pth or .safetensors)."),
    data: str | None = typer.Option(None, "--data", "-d", help="Training data: binidx prefix, .jsonl/.txt file or folder."),
    objective: str | None = typer.Option(None, "--objective", help="What kind of training: sft | dpo | orpo | grpo "
                                         "(dpo/orpo read preference pairs, grpo prompts; default sft)."),
    method: str | None = typer.Option(None, "--method", help=key_help("method.name")),
    rank: int | None = typer.Option(None, "--rank", "-r", help="Adapter rank (MiSS/DiSHA: shard size)."),
    quant: str | None = typer.Option(None, "--quant", help=key_help("quant")),
    ctx_len: int | None = typer.Option(None, "--ctx-len", help="Tokens per training sample."),
    micro_bsz: int | None = typer.Option(None, "--micro-bsz", help="Sequences per GPU per step."),
    grad_cp: bool | None = typer.Option(None, "--grad-cp/--no-grad-cp", help="Gradient checkpointing (default on)."),
    precision: str | None = typer.Option(None, "--precision", help=key_help("train.precision")),
    strategy: str | None = typer.Option(None, "--strategy", help=key_help("train.strategy")),
    devices: int | None = typer.Option(None, "--devices", help="GPUs to train on (default: the GPUs this machine has)."),
    accumulate: int | None = typer.Option(None, "--accumulate", help="Micro-batches per optimizer step (default 1)."),
    lr_init: float | None = typer.Option(None, "--lr-init", help="Learning rate at the start (default by method)."),
    lr_final: float | None = typer.Option(None, "--lr-final", help="Learning rate at the end."),
    epoch_steps: int | None = typer.Option(None, "--epoch-steps", help="Optimizer steps per epoch."),
    epoch_count: int | None = typer.Option(None, "--epoch-count", help="Epochs."),
    train_type: str | None = typer.Option(None, "--train-type", help=key_help("train.train_type")),
    chunk_ctx: int | None = typer.Option(None, "--chunk-ctx", help="infctx chunk length."),
    gpu: str | None = typer.Option(None, "--gpu", help="Target GPU for the fit check: '4090', 'A100 80GB', '24GB', "
                                   "'cpu' (train here; the time is measured) or 'none'."),
    out: str | None = typer.Option(None, "--out", "-o", help="Where to write the preset (default preset.yaml)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Ask nothing: recommended values for everything not given."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists."),
) -> None:
    """Create a preset: detect the model, pick method, rank, quant and batch with a live VRAM estimate, write YAML."""
    with user_errors():
        from rwkv_tune import wizard
        from rwkv_tune.checkpoint import atomic_path
        from rwkv_tune.presets_library import render

        if not yes and not (sys.stdin.isatty() and sys.stdout.isatty()):
            raise ConfigError("rwkv-tune init asks questions but this is not a terminal",
                              "Pass --yes (with --model and --data) to write the preset from flags and recommended values.")
        if yes and model is None:
            raise ConfigError("--yes needs --model", "Pass --model path/to/model.pth (the architecture is read from it).")
        flags = {"model": model, "objective": objective, "data": data, "gpu": gpu, "method": method, "rank": rank, "quant": quant,
                 "ctx_len": ctx_len, "micro_bsz": micro_bsz, "grad_cp": grad_cp, "precision": precision,
                 "devices": devices, "strategy": strategy, "lr_init": lr_init, "lr_final": lr_final,
                 "epoch_steps": epoch_steps, "epoch_count": epoch_count, "out": out,
                 "accumulate_grad_batches": accumulate, "train_type": train_type, "chunk_ctx": chunk_ctx}
        state = wizard.State(gpus=wizard.detect_gpus(), found_models=() if yes else wizard.find_models("."))
        state = wizard.answer_many(state, {k: v for k, v in flags.items() if v is not None}, must_exist=not yes)
        if yes:
            if data is None:
                state = wizard.answer(state, "data", "data/train", must_exist=False)
            target = Path(wizard.resolved(state)["out"]).expanduser()
            if target.exists() and not force:
                raise ConfigError(f"{target} already exists", "Pass --force to overwrite it, or --out another.yaml.")
        else:
            from rwkv_tune.wizard.prompts import run

            state = run(state, console, force=force)
        preset = wizard.build_preset(state)
        e = wizard.current_estimate(state)
        summary_lines = wizard.summary(e, state.gpus, cpu=wizard.resolved(state)["gpu"] == wizard.CPU) if e else []
        target = Path(wizard.resolved(state)["out"]).expanduser()
        text = render(preset, _header(state, summary_lines, target))
        with atomic_path(target) as tmp:
            tmp.write_text(text, encoding="utf-8")
    if preset.quant != "none" and importlib.util.find_spec("bitsandbytes") is None:
        state = replace(state, warnings=(*state.warnings, f"quant {preset.quant} needs bitsandbytes on the machine "
                                         "that trains (pip install bitsandbytes)"))
    for warning in state.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    if yes and e is not None:
        for line in summary_lines:
            console.print(escape(line), soft_wrap=True)
    console.print(f"wrote {escape(str(target))}", soft_wrap=True)
    console.print(f"next: [bold]{escape(wizard.next_command(target))}[/]", soft_wrap=True)


def _header(state: State, summary_lines: list[str], target: Path) -> list[str]:
    """The comment block at the top of the preset: what it trains, the estimate, and the next command."""
    from rwkv_tune import wizard

    v = wizard.resolved(state)
    what = v["method"] + (f" r{v['rank']}" if v["method"] in wizard.ADAPTERS else "")
    quant = "" if v["method"] == "full" else f", quant {v['quant']}"
    lines = [f"rwkv-tune preset: {what}{quant} on {Path(v['model']).name}, written by `rwkv-tune init`.", ""]
    if state.spec is not None:
        lines.append("Model:    " + wizard.describe_spec(state.spec))
    lines += [("Estimate: " if i == 0 else " " * 10) + line for i, line in enumerate(summary_lines)]
    lines += ["", "Every key not written here has its default; `rwkv-tune presets show NAME` shows complete examples.",
              f"Next: {wizard.next_command(target)}"]
    return lines
