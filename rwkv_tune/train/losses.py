"""The training loss of one micro-batch: next-token cross-entropy, optionally chunked over time (infctx).

Loss values are returned as sums over real targets (IGNORE = -100 positions excluded) so that
accumulation over micro-batches and infctx chunks averages over real targets exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from rwkv_tune.model.loss import chunked_cross_entropy
from rwkv_tune.model.loss import l2wrap as l2wrap_logits

IGNORE = -100


def _loss_sum(model: torch.nn.Module, hidden: torch.Tensor, y: torch.Tensor, l2wrap: bool) -> torch.Tensor:
    """Summed cross-entropy over real targets, chunked over the head so [B·T, V] fp32 logits never exist."""
    head = model.head
    if type(head) is torch.nn.Linear and head.weight.shape == (head.out_features, head.in_features):
        return chunked_cross_entropy(hidden, head.weight, y, ignore_index=IGNORE, reduction="sum",
                                     l2wrap=l2wrap and torch.is_grad_enabled())
    # An adapted, quantized or ZeRO-3-partitioned head: let the module compute its own logits.
    logits = head(hidden)
    loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="sum")
    return l2wrap_logits(loss, logits) if l2wrap and torch.is_grad_enabled() else loss


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
