"""`rwkv-tune generate MODEL|RUN_DIR|ADAPTER [--base BASE] --prompt TEXT`: stream text from a base, merged, or in-training model."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import typer

from rwkv_tune.cli._common import err_console, user_errors


def generate(
    source: Path = typer.Argument(..., help="A model .pth/.safetensors, a run directory (its latest adapter is "
                                  "applied to the run's base model on the fly), or an adapter (ours, or a Hugging "
                                  "Face peft folder) applied to --base."),
    base: Path | None = typer.Option(None, "--base", help="With an adapter: its base model (default: the path a peft "
                                     "folder's adapter_config.json records)."),
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
    from rwkv_tune.generate import Sampling, generate_text, load_for_generation

    prompt = unescape_prompt(prompt)
    with user_errors():
        model = load_for_generation(source, device, base=base)
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
