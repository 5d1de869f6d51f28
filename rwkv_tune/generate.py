"""Text generation with the recurrent state: the prompt is read once, then one `step()` per token."""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from rwkv_tune.data.tokenizer import get_tokenizer


@dataclass
class Sampling:
    max_tokens: int = 100
    temperature: float = 1.0
    top_p: float = 0.85
    seed: int | None = None
    stop_at_eod: bool = True


def sample_token(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> int:
    """Nucleus sampling from one position's logits; temperature 0 is greedy."""
    logits = logits.float()
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < top_p
        keep[0] = True  # top_p 0 (or a tiny one) still leaves the most likely token
        probs = torch.zeros_like(probs).scatter_(-1, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs / probs.sum(), 1, generator=generator))


@torch.no_grad()
def generate_tokens(model: torch.nn.Module, prompt_ids: list[int], sampling: Sampling) -> Iterator[int]:
    """Token ids after the prompt, one at a time (stops at the end-of-document token 0 if asked)."""
    generator = torch.Generator()
    if sampling.seed is not None:
        generator.manual_seed(sampling.seed)
    else:
        generator.seed()  # this generator only: the global torch RNG is left alone
    device = next(model.parameters()).device
    ids = prompt_ids or [0]
    hidden, state = model.hidden(torch.tensor([ids], device=device))
    last = model.head(hidden[0, -1])  # the prompt's last position only: [T, vocab] logits can be large
    for _ in range(sampling.max_tokens):
        token = sample_token(last.cpu(), sampling.temperature, sampling.top_p, generator)
        if token == 0 and sampling.stop_at_eod:
            return
        yield token
        last, state = model.step(torch.tensor([token], device=device), state)
        last = last[0]


def generate_text(model: torch.nn.Module, prompt: str, sampling: Sampling, *,
                  on_token: Callable[[int], None] | None = None) -> Iterator[str]:
    """Decoded text pieces as they become valid UTF-8 (multi-byte characters may span tokens)."""
    tokenizer = get_tokenizer()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for token in generate_tokens(model, tokenizer.encode(prompt), sampling):
        if on_token is not None:
            on_token(token)
        text = decoder.decode(tokenizer.token_bytes(token))
        if text:
            yield text
    text = decoder.decode(b"", final=True)
    if text:
        yield text


def load_for_generation(source: Path, device: str = "cpu", *, base: Path | None = None) -> torch.nn.Module:
    """A model ready for generation: a model file as is, a run's base model plus its latest adapter, or an
    adapter file/folder (ours, or a Hugging Face peft folder) applied to `base`."""
    from rwkv_tune.errors import ConfigError, UserError
    from rwkv_tune.model import load_model

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ConfigError(f"--device {device} is not auto, cpu, cuda or cuda:N", "Use --device cpu or --device cuda.")
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} but no CUDA GPU is visible", "Use --device cpu (or auto).")
    from rwkv_tune import peft
    from rwkv_tune.peft.identify import adapter_for_generation

    adapter, adapter_base = adapter_for_generation(source, base)
    if adapter is not None:
        model = load_model(adapter_base)
        peft.load_adapter(model, adapter)
        return model.to(device).eval()
    if base is not None:
        raise ConfigError(f"--base applies to an adapter, and {source} is not one", "Drop --base.")
    if not source.is_dir():
        return load_model(source, device=device).eval()

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
