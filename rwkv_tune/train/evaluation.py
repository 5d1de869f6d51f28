"""Checks during training: the loss on a held-out set, and text sampled from the model being trained."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from rwkv_tune.preset import Preset
from rwkv_tune.train.losses import sequence_loss


@torch.no_grad()
def evaluate(model: torch.nn.Module, path: str, preset: Preset, device: torch.device, *, batches: int) -> float:
    """Mean loss over the first `batches` batches of a held-out set."""
    from rwkv_tune.data import make_batches

    was_training = model.training
    model.eval()
    data = make_batches(path, mode="pad", ctx_len=preset.data.ctx_len, micro_bsz=preset.train.micro_bsz,
                        loss_mask=preset.data.loss_mask, seed=0, shuffle=False, vocab_size=model.spec.vocab_size)
    total, count = 0.0, 0
    for _ in range(batches):
        x, y = next(data)
        s, n = sequence_loss(model, x.to(device), y.to(device), scale=0.0, l2wrap=False, backward=False)
        total, count = total + s, count + n
    model.train(was_training)
    return total / max(1, count)


def samples(model: torch.nn.Module, prompts: list[str], *, max_tokens: int,
            seed: int) -> Iterator[tuple[str, str | None]]:
    """(prompt, generated text) for each prompt; None for a prompt with tokens beyond the model's vocab."""
    from rwkv_tune.data.tokenizer import get_tokenizer
    from rwkv_tune.generate import Sampling, generate_text

    was_training = model.training
    model.eval()
    try:
        for prompt in prompts:
            if max(get_tokenizer().encode(prompt) or [0]) >= model.spec.vocab_size:
                yield prompt, None
                continue
            sampling = Sampling(max_tokens=max_tokens, temperature=1.0, top_p=0.85, seed=seed)
            yield prompt, "".join(generate_text(model, prompt, sampling))
    finally:
        model.train(was_training)
