"""The training loss of one micro-batch: next-token cross-entropy, optionally chunked over time (infctx).

Loss values are returned as sums over real targets (IGNORE = -100 positions excluded) so that
accumulation over micro-batches and infctx chunks averages over real targets exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

IGNORE = -100


class L2Wrap(torch.autograd.Function):
    """The official trainer's logit regulariser: pushes the largest logit of each position toward 0.

    Forward returns the loss unchanged; backward adds 1e-4/(B·T) · max_logit to that logit's gradient.
    """

    @staticmethod
    def forward(ctx, loss: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(logits)
        return loss

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):  # type: ignore[override]
        (logits,) = ctx.saved_tensors
        factor = 1e-4 / (logits.shape[0] * logits.shape[1])
        maxx, ids = torch.max(logits, -1, keepdim=True)
        glogits = torch.zeros_like(logits).scatter_(-1, ids, maxx * factor)
        return grad_output, glogits


def _loss_sum(model: torch.nn.Module, hidden: torch.Tensor, y: torch.Tensor, l2wrap: bool) -> torch.Tensor:
    logits = model.head(hidden)
    loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="sum")
    return L2Wrap.apply(loss, logits) if l2wrap and torch.is_grad_enabled() else loss


def sequence_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, scale: float,
                  chunk_ctx: int | None = None, l2wrap: bool = True,
                  backward: Callable[[torch.Tensor], None] | bool | None = None) -> tuple[float, int]:
    """Forward (and backward of loss·scale) for one micro-batch; returns (loss sum, real target count).

    With `chunk_ctx`, the sequence is processed in chunks with the recurrent state carried and
    detached between them (truncated BPTT): memory of one chunk, same forward values as the whole.
    `backward`: None → `loss.backward()`, a callable → called with the scaled loss, False → no backward.
    """
    count = int((y != IGNORE).sum())
    spans = [(0, x.shape[1])] if not chunk_ctx else [(s, min(s + chunk_ctx, x.shape[1]))
                                                     for s in range(0, x.shape[1], chunk_ctx)]
    total = 0.0
    state = None
    for start, end in spans:
        yc = y[:, start:end]
        hidden, state = model.hidden(x[:, start:end], state)
        state = state.detach()
        loss = _loss_sum(model, hidden, yc, l2wrap)
        total += float(loss.detach())
        if backward is False:
            continue
        scaled = loss * scale
        if callable(backward):
            backward(scaled)
        else:
            scaled.backward()
    return total, count
