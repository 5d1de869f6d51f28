"""Text generation with the recurrent state: the prompt is read once, then one `step()` per token."""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator
from dataclasses import dataclass

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
