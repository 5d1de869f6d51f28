"""`rwkv-tune generate MODEL|RUN_DIR --prompt TEXT`: stream text from a base, merged, or in-training model."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import typer

from rwkv_tune.cli._common import err_console, user_errors


def generate(
    source: Path = typer.Argument(..., help="A model .pth/.safetensors, or a run directory (its latest adapter is "
                                  "applied to the run's base model on the fly)."),
    prompt: str = typer.Option(..., "--prompt", "-p", help="The text to continue; \\n, \\t and \\\\ stand for a "
                               "newline, a tab and a backslash."),
    max_tokens: int = typer.Option(100, "--max-tokens", min=1, help="Tokens to generate."),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0, help="0 = greedy."),
    top_p: float = typer.Option(0.85, "--top-p", min=0.0, max=1.0, help="Nucleus sampling threshold."),
    seed: int = typer.Option(None, "--seed", help="Make the sampling repeatable."),
    device: str = typer.Option("auto", "--device", help="auto (a CUDA GPU when there is one), cpu, cuda, cuda:N."),
) -> None:
    """Generate text with the recurrent state (the prompt is read once); prints tokens/s at the end."""
    from rwkv_tune.data.tokenizer import get_tokenizer
    from rwkv_tune.generate import Sampling, generate_text

    prompt = unescape_prompt(prompt)
    with user_errors():
        model = load_for_generation(source, device)
        if source.is_file():
            from rwkv_tune.run_merges import merge_notice

            notice = merge_notice(source)
            if notice:  # a merged model behind its run, or from a run that stopped early
                err_console.print(f"[yellow]note:[/] {notice}", soft_wrap=True, highlight=False)
        sampling = Sampling(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed)
        stamps: list[float] = []
        started = time.perf_counter()
        out = sys.stdout
        # Raw writes, not rich: generated text must come out byte for byte (no wrapping, no markup or emoji).
        out.write(prompt)
        out.flush()
        for piece in generate_text(model, prompt, sampling, on_token=lambda _: stamps.append(time.perf_counter())):
            out.write(piece)
            out.flush()
        out.write("\n")
        out.flush()
    err_console.print(f"[dim]{speed_line(len(get_tokenizer().encode(prompt)), started, stamps)}[/]",
                      highlight=False)


_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def unescape_prompt(text: str) -> str:
    """Turn the two characters `\\n` into a newline (and `\\t`, `\\\\`), as a shell passes them; other text as is."""
    return re.sub(r"\\([nt\\])", lambda m: _ESCAPES[m.group(1)], text)


def speed_line(prompt_tokens: int, started: float, stamps: list[float]) -> str:
    """'24 tokens in 0.41 s · 61.0 tokens/s (prompt: 5 tokens, 0.05 s)': generation speed after the prompt."""
    if not stamps:
        return f"no tokens generated (prompt: {prompt_tokens} tokens)"
    first, last = stamps[0] - started, stamps[-1] - started
    rate = (len(stamps) - 1) / (last - first) if len(stamps) > 1 and last > first else 1 / max(first, 1e-9)
    return (f"{len(stamps)} tokens in {last:.2f} s · {rate:.1f} tokens/s "
            f"(prompt: {prompt_tokens} tokens, {first:.2f} s to the first token)")


def load_for_generation(source: Path, device: str = "cpu"):
    """A model ready for generation: a model file as is, or a run's base model plus its latest adapter."""
    import torch

    from rwkv_tune.errors import ConfigError, UserError
    from rwkv_tune.model import load_model

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ConfigError(f"--device {device} is not auto, cpu, cuda or cuda:N", "Use --device cpu or --device cuda.")
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} but no CUDA GPU is visible", "Use --device cpu (or auto).")
    if not source.is_dir():
        return load_model(source, device=device).eval()

    from rwkv_tune import peft
    from rwkv_tune.preset import load
    from rwkv_tune.runs import RunDir

    run = RunDir(source)
    if not run.preset.exists():
        raise UserError(f"{source} is not a run directory (no preset.yaml)", "Pass a model .pth or a run's output.dir.")
    if not run.adapter.exists():
        raise UserError(f"run {source} has no adapter yet (no {run.adapter.name})",
                        "Wait for its first checkpoint, or pass the base model file.")
    base = Path(load(run.preset).model.path)
    if not base.exists():
        raise UserError(f"the run's base model {base} does not exist (seen from {Path.cwd()})",
                        "Run from the folder you trained in, or pass a merged model file.")
    model = load_model(base)
    peft.load_adapter(model, run.adapter)
    return model.to(device).eval()
