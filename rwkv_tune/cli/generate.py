"""`rwkv-tune generate MODEL|RUN_DIR --prompt TEXT`: stream text from a base, merged, or in-training model."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from rwkv_tune.cli._common import console, err_console, user_errors


def generate(
    source: Path = typer.Argument(..., help="A model .pth, or a run directory (its latest adapter is applied on the fly)."),
    prompt: str = typer.Option(..., "--prompt", "-p", help="The text to continue."),
    max_tokens: int = typer.Option(100, "--max-tokens", min=1, help="Tokens to generate."),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0, help="0 = greedy."),
    top_p: float = typer.Option(0.85, "--top-p", min=0.0, max=1.0, help="Nucleus sampling threshold."),
    seed: int = typer.Option(None, "--seed", help="Make the sampling repeatable."),
) -> None:
    """Generate text with the recurrent state (the prompt is read once); prints tokens/s at the end."""
    from rwkv_tune.generate import Sampling, generate_text

    with user_errors():
        model = load_for_generation(source)
        sampling = Sampling(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed)
        console.print(prompt, end="", style="bold", markup=False, highlight=False)
        started, pieces = time.perf_counter(), 0
        for piece in generate_text(model, prompt, sampling):
            console.print(piece, end="", markup=False, highlight=False)
            pieces += 1
        elapsed = time.perf_counter() - started
        console.print()
        err_console.print(f"[dim]{pieces} pieces in {elapsed:.2f} s ({pieces / max(elapsed, 1e-9):.1f}/s)[/]")


def load_for_generation(source: Path):
    """A model ready for generation: a .pth file as is, or a run's base model plus its latest adapter."""
    from rwkv_tune.errors import UserError
    from rwkv_tune.model import load_model

    if source.is_dir():
        from rwkv_tune import peft
        from rwkv_tune.preset import load
        from rwkv_tune.runs import RunDir

        run = RunDir(source)
        if not run.preset.exists():
            raise UserError(f"{source} is not a run directory (no preset.yaml)", "Pass a model .pth or a runs/NAME folder.")
        if not run.adapter.exists():
            raise UserError(f"run {source} has no adapter yet", "Wait for the first checkpoint, or pass the base model.")
        preset = load(run.preset)
        model = load_model(preset.model.path, dtype=None)
        peft.load_adapter(model, run.adapter)
    else:
        model = load_model(source)
    return model.eval()
