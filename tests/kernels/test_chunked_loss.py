"""chunked_cross_entropy equals F.cross_entropy over the full logits, in value and gradients."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from rwkv_tune.model.loss import chunked_cross_entropy, default_chunk_tokens


def make(B=2, T=13, C=24, V=50, dtype=torch.float64, seed=0, ignore_frac=0.3):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, C, generator=gen).to(dtype).requires_grad_()
    weight = (torch.randn(V, C, generator=gen) * 0.5).to(dtype).requires_grad_()
    targets = torch.randint(0, V, (B, T), generator=gen)
    targets[torch.rand(B, T, generator=gen) < ignore_frac] = -100
    return hidden, weight, targets


def reference(hidden, weight, targets, reduction="mean", l2wrap=False):
    logits = hidden @ weight.T
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction=reduction)
    if l2wrap:  # RWKV-LM's L2Wrap: identity on the loss, extra gradient on each position's top logit
        class L2Wrap(torch.autograd.Function):
            @staticmethod
            def forward(ctx, loss, y):
                ctx.save_for_backward(y)
                return loss

            @staticmethod
            def backward(ctx, grad_output):
                (y,) = ctx.saved_tensors
                factor = 1e-4 / (y.shape[0] * y.shape[1])
                top, ids = torch.max(y, -1, keepdim=True)
                gy = torch.zeros_like(y).scatter_(-1, ids, top * factor)
                return grad_output, gy

        loss = L2Wrap.apply(loss, logits)
    return loss


def grads(loss, *xs):
    return torch.autograd.grad(loss, xs)


@pytest.mark.parametrize("chunk", [1, 5, 13, 26, 1000])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_matches_full_cross_entropy_fp64(chunk, reduction):
    hidden, weight, targets = make()
    loss = chunked_cross_entropy(hidden, weight, targets, chunk_tokens=chunk, reduction=reduction)
    ref = reference(hidden, weight, targets, reduction)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    for g, gr in zip(grads(loss, hidden, weight), grads(ref, hidden, weight), strict=True):
        torch.testing.assert_close(g, gr, rtol=1e-10, atol=1e-12)


def test_matches_full_cross_entropy_fp32():
    hidden, weight, targets = make(B=3, T=40, C=64, V=300, dtype=torch.float32, seed=1)
    loss = chunked_cross_entropy(hidden, weight, targets, chunk_tokens=7)
    ref = reference(hidden, weight, targets)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    for g, gr in zip(grads(loss, hidden, weight), grads(ref, hidden, weight), strict=True):
        torch.testing.assert_close(g, gr, rtol=1e-5, atol=1e-7)


def test_bf16_is_close_and_keeps_dtypes():
    hidden, weight, targets = make(B=2, T=32, C=64, V=200, dtype=torch.bfloat16, seed=2)
    loss = chunked_cross_entropy(hidden, weight, targets, chunk_tokens=9)
    ref = reference(hidden.double(), weight.double(), targets)
    assert loss.dtype == torch.bfloat16
    torch.testing.assert_close(loss.double(), ref, rtol=1e-2, atol=1e-2)
    gh, gw = grads(loss, hidden, weight)
    rh, rw = grads(ref, hidden, weight)
    assert gh.dtype == gw.dtype == torch.bfloat16
    for g, r in ((gh, rh), (gw, rw)):
        assert ((g.double() - r).norm() / r.norm()).item() < 1e-2


def test_l2wrap_matches_the_official_regulariser():
    hidden, weight, targets = make(B=2, T=9, C=16, V=40, seed=3)
    loss = chunked_cross_entropy(hidden, weight, targets, chunk_tokens=4, l2wrap=True)
    ref = reference(hidden, weight, targets, l2wrap=True)
    torch.testing.assert_close(loss, ref)
    g_loss = grads(loss, hidden, weight)
    for g, gr in zip(g_loss, grads(ref, hidden, weight), strict=True):
        torch.testing.assert_close(g, gr, rtol=1e-10, atol=1e-12)
    plain = chunked_cross_entropy(hidden, weight, targets, chunk_tokens=4)
    assert not torch.allclose(grads(plain, hidden)[0], g_loss[0])


def test_only_hidden_needs_grad_for_frozen_head():
    hidden, weight, targets = make(seed=4)
    weight = weight.detach()
    loss = chunked_cross_entropy(hidden, weight, targets, chunk_tokens=6)
    loss.backward()
    ref_h = grads(reference(hidden, weight, targets), hidden)[0]
    torch.testing.assert_close(hidden.grad, ref_h)


def test_all_ignored_is_nan_like_cross_entropy():
    hidden, weight, targets = make(seed=5)
    targets[:] = -100
    assert torch.isnan(chunked_cross_entropy(hidden, weight, targets))
    assert torch.isnan(reference(hidden, weight, targets))


class _LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_never_materialises_full_logits():
    B, T, C, V, chunk = 2, 64, 16, 500, 8
    hidden, weight, targets = make(B=B, T=T, C=C, V=V, dtype=torch.float32, seed=6)
    with _LargestTensor() as mode:
        loss = chunked_cross_entropy(hidden, weight, targets, chunk_tokens=chunk)
        loss.backward()
    assert mode.largest <= max(chunk * V, V * C), mode.largest
    assert mode.largest < B * T * V


def test_default_chunk_and_argument_checks():
    assert default_chunk_tokens(65536) == 1024
    hidden, weight, targets = make()
    with pytest.raises(ValueError, match="reduction"):
        chunked_cross_entropy(hidden, weight, targets, reduction="none")
    with pytest.raises(ValueError, match="targets"):
        chunked_cross_entropy(hidden, weight, targets[:, :-1])
    with pytest.raises(ValueError, match="head_weight"):
        chunked_cross_entropy(hidden, weight[:, :-1], targets)


def test_l2wrap_on_module_logits_matches_the_chunked_loss_gradients():
    """The path for a head that computes its own logits (ZeRO-3, adapted, quantized) keeps L2Wrap's gradient."""
    import torch.nn.functional as F

    from rwkv_tune.model.loss import l2wrap

    torch.manual_seed(0)
    h = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(11, 8, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 11, (2, 5))
    y[0, 0] = -100
    chunked_cross_entropy(h, w, y, ignore_index=-100, reduction="sum", l2wrap=True).backward()
    want = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    logits = h @ w.T
    loss = l2wrap(F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100, reduction="sum"), logits)
    loss.backward()
    torch.testing.assert_close(h.grad, want[0])
    torch.testing.assert_close(w.grad, want[1])
