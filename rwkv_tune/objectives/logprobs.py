"""Log-probabilities of response tokens: the quantity every preference and RL loss is built from.

A batch is `tokens` [B, T] (prompt + response, right-padded) and `response` [B, T] (True on the
response's tokens). Token t is scored by the logits at t-1, so the prompt is never scored and the
first response token is scored from the prompt's last position.
"""

from __future__ import annotations

import torch


def token_logprobs(model: torch.nn.Module, tokens: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    """log p(token_t | tokens_<t) for t ≥ 1, zero where t is not a response token: [B, T-1] fp32."""
    hidden, _ = model.hidden(tokens[:, :-1])
    logits = model.head(hidden).float()
    targets = tokens[:, 1:]
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    logp = picked - torch.logsumexp(logits, dim=-1)
    return logp * response[:, 1:].to(logp.dtype)


def sequence_logprobs(model: torch.nn.Module, tokens: torch.Tensor,
                      response: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of response-token log-probs [B], response token count [B]) per row."""
    logp = token_logprobs(model, tokens, response)
    return logp.sum(-1), response[:, 1:].sum(-1).to(logp.dtype)
