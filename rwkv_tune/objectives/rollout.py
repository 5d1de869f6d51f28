"""GRPO sampling with the recurrent state: read the prompt once, then G completions from copies of its state.

The G completions advance together, one batched `model.step` per token; a row that samples the
end-of-document token (0) is finished (the token is kept: the model learns to stop). Sampling uses
its own seeded `torch.Generator`, whose state is saved with the checkpoint, so a resumed run samples
exactly what an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rwkv_tune.data.tokenizer import EOD
from rwkv_tune.model.common import State


@dataclass
class Group:
    """The G completions of one prompt: token ids (end token included when sampled) per row."""

    prompt: tuple[int, ...]
    completions: list[list[int]]


def sample_rows(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """One token per row of logits [G, V] with temperature and nucleus (top_p) sampling, on the CPU generator."""
    probs = torch.softmax(logits.float().cpu() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < top_p
        keep[:, 0] = True  # the most likely token always stays
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs * keep)
    return torch.multinomial(probs / probs.sum(-1, keepdim=True), 1, generator=generator).squeeze(-1)


def repeat_state(state: State, copies: int) -> State:
    """A batch-1 State repeated into `copies` independent rows."""
    return State(state.att_shift.repeat(1, copies, 1), state.wkv.repeat(1, copies, 1, 1, 1),
                 state.ffn_shift.repeat(1, copies, 1))


@torch.no_grad()
def sample_group(model: torch.nn.Module, prompt: tuple[int, ...] | list[int], group_size: int, *,
                 max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                 generator: torch.Generator) -> Group:
    """G completions of one prompt: one prefill of the prompt, then G rows stepped together."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ids = list(prompt) or [EOD]
    hidden, state = model.hidden(torch.tensor([ids], device=device))
    logits = model.head(hidden[:, -1]).expand(group_size, -1)
    state = repeat_state(state, group_size)
    completions: list[list[int]] = [[] for _ in range(group_size)]
    done = torch.zeros(group_size, dtype=torch.bool)
    for _ in range(max_new_tokens):
        tokens = sample_rows(logits, temperature, top_p, generator)
        for row in (~done).nonzero().flatten().tolist():
            completions[row].append(int(tokens[row]))
        done |= tokens == EOD
        if bool(done.all()):
            break
        logits, state = model.step(tokens.to(device), state)
    model.train(was_training)
    return Group(tuple(ids), completions)
