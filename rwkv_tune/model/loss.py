"""Cross-entropy over the LM head, a chunk of tokens at a time, so [B*T, V] logits never exist at once.

`chunked_cross_entropy(hidden, head_weight, targets)` equals
`F.cross_entropy((hidden @ head_weight.T).flatten(0, 1), targets.flatten(), ignore_index=-100)` in value and
gradients, but the forward keeps only one [chunk, V] fp32 logits block alive and the backward
recomputes each block. At ctx 4096 with V = 65536 the full fp32 logits are 1 GiB per sequence.

`l2wrap=True` adds RWKV-LM's L2Wrap regulariser: at each position (masked ones included, as in the
official trainer) the gradient of the largest logit grows by 1e-4 / (B*T) * that logit, nudging
logits toward 0. Like the official trainer, that term is not scaled by the incoming gradient and does
not change the loss value.
"""

import torch
from torch import Tensor

L2WRAP_FACTOR = 1e-4
_DEFAULT_BLOCK_ELEMENTS = 2**26  # logits per chunk: 1024 tokens x 65536 vocab = 256 MiB in fp32


def default_chunk_tokens(vocab_size: int) -> int:
    """Tokens per chunk so that one fp32 logits block stays near 256 MiB."""
    return max(1, _DEFAULT_BLOCK_ELEMENTS // max(1, vocab_size))


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index, chunk, l2wrap, mean):
        h = hidden.reshape(-1, hidden.shape[-1])
        y = targets.reshape(-1)
        valid = y != ignore_index
        n_valid = valid.sum()
        acc = torch.promote_types(hidden.dtype, torch.float32)  # fp32, or fp64 for fp64 inputs
        total = torch.zeros((), dtype=acc, device=h.device)
        lse = torch.empty(h.shape[0], dtype=acc, device=h.device)
        for s in range(0, h.shape[0], chunk):
            logits = (h[s:s + chunk] @ weight.T).to(acc)
            lse[s:s + chunk] = torch.logsumexp(logits, dim=-1)
            yc, vc = y[s:s + chunk], valid[s:s + chunk]
            picked = logits.gather(1, torch.where(vc, yc, 0)[:, None]).squeeze(1)
            total += torch.where(vc, lse[s:s + chunk] - picked, 0.0).sum()
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.ignore_index, ctx.chunk, ctx.l2wrap, ctx.mean = ignore_index, chunk, l2wrap, mean
        ctx.n_valid = n_valid
        loss = total / n_valid if mean else total
        return loss.to(hidden.dtype)

    @staticmethod
    def backward(ctx, grad_loss):
        hidden, weight, targets, lse = ctx.saved_tensors
        h = hidden.reshape(-1, hidden.shape[-1])
        y = targets.reshape(-1)
        valid = y != ctx.ignore_index
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        acc = lse.dtype
        scale = grad_loss.to(acc) / ctx.n_valid if ctx.mean else grad_loss.to(acc)
        l2_factor = L2WRAP_FACTOR / h.shape[0]  # 1e-4 / (B*T)
        dh = torch.empty_like(h) if need_h else None
        # fp32 accumulation across chunks: a bf16 running sum would round once per chunk
        dw = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        for s in range(0, h.shape[0], ctx.chunk):
            hc, yc, vc = h[s:s + ctx.chunk], y[s:s + ctx.chunk], valid[s:s + ctx.chunk]
            logits = (hc @ weight.T).to(acc)
            grad = torch.exp(logits - lse[s:s + ctx.chunk, None])  # softmax
            grad.scatter_add_(1, torch.where(vc, yc, 0)[:, None], torch.full_like(grad[:, :1], -1.0))
            grad *= torch.where(vc, scale, 0.0)[:, None]
            if ctx.l2wrap:
                top, idx = logits.max(dim=-1, keepdim=True)
                grad.scatter_add_(1, idx, top * l2_factor)
            grad = grad.to(weight.dtype)
            if need_h:
                dh[s:s + ctx.chunk] = grad @ weight
            if need_w:
                dw += (grad.T @ hc).to(acc)
        return (dh.view_as(hidden) if need_h else None, dw.to(weight.dtype) if need_w else None,
                None, None, None, None, None)


def chunked_cross_entropy(
    hidden: Tensor,
    head_weight: Tensor,
    targets: Tensor,
    ignore_index: int = -100,
    chunk_tokens: int | None = None,
    *,
    l2wrap: bool = False,
    reduction: str = "mean",
) -> Tensor:
    """Cross-entropy of `hidden [B, T, C] @ head_weight[V, C].T` against `targets [B, T]`, chunk by chunk.

    reduction "mean" averages over positions whose target is not `ignore_index` (NaN when there are
    none, like F.cross_entropy); "sum" adds them. `chunk_tokens` defaults to ~256 MiB of fp32 logits.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', not {reduction!r}")
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} and targets {tuple(targets.shape)} disagree on [B, T]")
    if head_weight.ndim != 2 or head_weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"head_weight must be [V, {hidden.shape[-1]}], got {tuple(head_weight.shape)}")
    chunk = chunk_tokens or default_chunk_tokens(head_weight.shape[0])
    if chunk < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk}")
    return _ChunkedCrossEntropy.apply(hidden, head_weight, targets, ignore_index, chunk, l2wrap,
                                      reduction == "mean")


__all__ = ["L2WRAP_FACTOR", "chunked_cross_entropy", "default_chunk_tokens"]


class _L2Wrap(torch.autograd.Function):
    @staticmethod
    def forward(ctx, loss, logits):
        ctx.save_for_backward(logits)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        (logits,) = ctx.saved_tensors
        factor = L2WRAP_FACTOR / (logits.numel() // logits.shape[-1])  # 1e-4 / (B*T)
        top, idx = logits.float().max(dim=-1, keepdim=True)
        grad = torch.zeros_like(logits, dtype=top.dtype).scatter_(-1, idx, top * factor)
        return grad_loss, grad.to(logits.dtype)


def l2wrap(loss: Tensor, logits: Tensor) -> Tensor:
    """`loss` unchanged, with L2Wrap's gradient added to `logits` (for logits computed outside the chunked CE)."""
    return _L2Wrap.apply(loss, logits)
