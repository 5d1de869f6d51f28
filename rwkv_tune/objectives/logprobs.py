"""Log-probabilities of response tokens: the quantity every preference and RL loss is built from.

A batch is `tokens` [B, T] (prompt + response, right-padded) and `response` [B, T] (True on the
response's tokens). Token t is scored by the logits at t-1, so the prompt is never scored and the
first response token is scored from the prompt's last position.

Only response positions go through the head, in chunks; with gradients on, each chunk is
checkpointed, so fp32 logits [positions, vocab] exist for one chunk at a time (forward and backward).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

CHUNK = 1024  # response positions per head call


def _scored(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def token_logprobs(model: torch.nn.Module, tokens: torch.Tensor, response: torch.Tensor,
                   chunk: int = CHUNK) -> torch.Tensor:
    """log p(token_t | tokens_<t) for t ≥ 1, zero where t is not a response token: [B, T-1] fp32."""
    hidden, _ = model.hidden(tokens[:, :-1])
    scored = response[:, 1:]
    picked, targets = hidden[scored], tokens[:, 1:][scored]
    pieces = []
    for start in range(0, picked.shape[0], chunk):
        h, y = picked[start:start + chunk], targets[start:start + chunk]
        if torch.is_grad_enabled() and h.requires_grad:
            pieces.append(checkpoint(_scored, model.head, h, y, use_reentrant=False))
        else:
            pieces.append(_scored(model.head, h, y))
    out = torch.zeros(scored.shape, dtype=torch.float32, device=tokens.device)
    return out.masked_scatter(scored, torch.cat(pieces)) if pieces else out


def sequence_logprobs(model: torch.nn.Module, tokens: torch.Tensor,
                      response: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of response-token log-probs [B], response token count [B]) per row."""
    logp = token_logprobs(model, tokens, response)
    return logp.sum(-1), response[:, 1:].sum(-1).to(logp.dtype)
