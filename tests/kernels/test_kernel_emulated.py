"""The CUDA kernels' own source, run on the CPU (g++, one thread per GPU thread), against the naive loop.

This checks the kernel math, indexing, state checkpoints, backstepping and the autograd wiring of
rwkv_tune.model.wkv.cuda without a GPU; tests/gpu repeats the comparison with nvcc on a real device.
"""

import pytest
import torch
import torch.nn.functional as F
from wkv_emulator import (
    emulated_wkv6_backward,
    emulated_wkv6_forward,
    emulated_wkv7_backward,
    emulated_wkv7_forward,
)

from rwkv_tune.model.wkv import cuda
from rwkv_tune.model.wkv.chunked7 import wkv7_chunked
from rwkv_tune.model.wkv.naive import wkv6_naive, wkv7_naive

V7_MIN_LOG_DECAY = -0.6065306597126334


def rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30)).item()


def v7_inputs(B, T, H, N, dtype, seed=0, min_decay=False):
    """Inputs shaped like a real RWKV-7 layer: decays in (0.545, 1], a = -kk, b = kk * alpha."""
    gen = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    r, k, v = rnd(B, T, H, N) * 0.5, rnd(B, T, H, N) * 0.5, rnd(B, T, H, N)
    g = torch.full((B, T, H, N), V7_MIN_LOG_DECAY) if min_decay else V7_MIN_LOG_DECAY * torch.sigmoid(rnd(B, T, H, N) * 2)
    kk = F.normalize(rnd(B, T, H, N), dim=-1)
    alpha = torch.rand(B, T, H, N, generator=gen)
    r, k, v, a, b = (x.to(dtype).contiguous() for x in (r, k, v, -kk, kk * alpha))
    return r, g.contiguous(), k, v, a, b


def v6_inputs(B, T, H, N, dtype, seed=0):
    """RWKV-6 inputs with unbounded decays (some near 0, some near 1) and a bonus u."""
    gen = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    r, k, v = (rnd(B, T, H, N).mul(0.5).to(dtype) for _ in range(3))
    g = -torch.exp(torch.rand(B, T, H, N, generator=gen) * 7 - 5)
    return r, g, k, v, rnd(H, N) * 0.3


def naive_grads(fn, inputs, dy, dsT):
    xs = [x.double().requires_grad_() for x in inputs]
    y, s = fn(*xs)
    ((y * dy.double()).sum() + (s * dsT.double()).sum()).backward()
    return y, s, [x.grad for x in xs]


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 5e-5), (torch.bfloat16, 1e-2)])
def test_wkv7_kernel_forward_backward(emulator, dtype, tol):
    B, T, H, N = 2, 48, 2, 64
    r, g, k, v, a, b = v7_inputs(B, T, H, N, dtype)
    s0 = torch.randn(B, H, N, N) * 0.1
    dy, dsT = torch.randn(B, T, H, N).to(dtype), torch.randn(B, H, N, N) * 0.1
    y, sT, ckpt, sa = emulated_wkv7_forward(emulator, r, g, k, v, a, b, s0, True)
    y_ref, s_ref, grads_ref = naive_grads(wkv7_naive, (r, g, k, v, a, b, s0), dy, dsT)
    assert rel(y, y_ref) < tol and rel(sT, s_ref) < tol
    # the last checkpoint is the state after the last step
    assert torch.equal(ckpt[:, :, -1], sT)

    y2, sT2, ckpt2, _ = emulated_wkv7_forward(emulator, r, g, k, v, a, b, s0, False)
    assert torch.equal(y2, y) and torch.equal(sT2, sT) and ckpt2.numel() == 0

    grads = emulated_wkv7_backward(emulator, r, g, k, v, a, b, dy, dsT, ckpt, sa)
    for name, got, ref in zip("r g k v a b s0".split(), grads, grads_ref, strict=True):
        assert rel(got, ref) < tol, name


def test_wkv7_kernel_without_state(emulator):
    B, T, H, N = 1, 32, 3, 64
    r, g, k, v, a, b = v7_inputs(B, T, H, N, torch.float32, seed=1)
    dy = torch.randn(B, T, H, N)
    y, sT, ckpt, sa = emulated_wkv7_forward(emulator, r, g, k, v, a, b, None, True)
    y_ref, s_ref, grads_ref = naive_grads(wkv7_naive, (r, g, k, v, a, b), dy, torch.zeros(B, H, N, N))
    assert rel(y, y_ref) < 1e-5 and rel(sT, s_ref) < 1e-5
    grads = emulated_wkv7_backward(emulator, r, g, k, v, a, b, dy, None, ckpt, sa)
    for name, got, ref in zip("r g k v a b".split(), grads[:6], grads_ref, strict=True):
        assert rel(got, ref) < 5e-5, name


@pytest.mark.parametrize("min_decay,tol", [(False, 1e-4), (True, 1e-3)])
def test_wkv7_kernel_long_sequence_backstepping(emulator, min_decay, tol):
    """Backstepping divides by the decay; the 16-step checkpoints keep the error bounded at any T.

    All decays at the v7 floor (0.545) is the worst case: 1.84x error growth per step inside a chunk.
    """
    B, T, H, N = 1, 1024 if not min_decay else 256, 1, 64
    r, g, k, v, a, b = v7_inputs(B, T, H, N, torch.float32, seed=2, min_decay=min_decay)
    dy = torch.randn(B, T, H, N)
    y, sT, ckpt, sa = emulated_wkv7_forward(emulator, r, g, k, v, a, b, None, True)
    _, _, grads_ref = naive_grads(wkv7_chunked, (r, g, k, v, a, b), dy, torch.zeros(B, H, N, N))
    grads = emulated_wkv7_backward(emulator, r, g, k, v, a, b, dy, None, ckpt, sa)
    for name, got, ref in zip("r g k v a b".split(), grads[:6], grads_ref, strict=True):
        assert rel(got, ref) < tol, name


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_wkv6_kernel_forward_backward(emulator, dtype, tol):
    B, T, H, N = 2, 37, 2, 64
    r, g, k, v, u = v6_inputs(B, T, H, N, dtype)
    s0 = torch.randn(B, H, N, N) * 0.1
    dy, dsT = torch.randn(B, T, H, N).to(dtype), torch.randn(B, H, N, N) * 0.1
    y, sT = emulated_wkv6_forward(emulator, r, g, k, v, u, s0)
    y_ref, s_ref, grads_ref = naive_grads(wkv6_naive, (r, g, k, v, u, s0), dy, dsT)
    assert rel(y, y_ref) < tol and rel(sT, s_ref) < tol
    dr, dg, dk, dv, du, ds0 = emulated_wkv6_backward(emulator, r, g, k, v, u, s0, dy, dsT)
    for name, got, ref in zip("r g k v u s0".split(), (dr, dg, dk, dv, du.sum(0), ds0), grads_ref, strict=True):
        assert rel(got, ref) < tol, name


def test_head_size_32_build(emulator):
    B, T, H, N = 1, 32, 2, 32
    r, g, k, v, a, b = v7_inputs(B, T, H, N, torch.float32, seed=3)
    s0, dy, dsT = torch.randn(B, H, N, N) * 0.1, torch.randn(B, T, H, N), torch.randn(B, H, N, N)
    y, sT, ckpt, sa = emulated_wkv7_forward(emulator, r, g, k, v, a, b, s0, True)
    y_ref, s_ref, grads_ref = naive_grads(wkv7_naive, (r, g, k, v, a, b, s0), dy, dsT)
    assert rel(y, y_ref) < 1e-5 and rel(sT, s_ref) < 1e-5
    grads = emulated_wkv7_backward(emulator, r, g, k, v, a, b, dy, dsT, ckpt, sa)
    for name, got, ref in zip("r g k v a b s0".split(), grads, grads_ref, strict=True):
        assert rel(got, ref) < 5e-5, name
    r6, g6, k6, v6, u = v6_inputs(B, T, H, N, torch.float32, seed=3)
    y6, s6 = emulated_wkv6_forward(emulator, r6, g6, k6, v6, u, s0)
    y6_ref, s6_ref = wkv6_naive(r6, g6, k6, v6, u, s0)
    assert rel(y6, y6_ref) < 1e-5 and rel(s6, s6_ref) < 1e-5


# --- the Python side (custom ops, autograd Functions, padding, shared state) over the emulated kernels


def _compare_autograd(fn_kernel, fn_ref, inputs, state, tol):
    xs = [x.detach().clone().requires_grad_() for x in inputs]
    st = state.detach().clone().requires_grad_()
    B = xs[0].shape[0]
    y, s = fn_kernel(*xs, st.expand(B, *st.shape))
    ref_xs = [x.detach().double().requires_grad_() for x in inputs]
    ref_st = state.detach().double().requires_grad_()
    y_ref, s_ref = fn_ref(*ref_xs, ref_st.expand(B, *st.shape))
    assert y.dtype == inputs[0].dtype and s.dtype == torch.float32 and y.shape == y_ref.shape
    assert rel(y, y_ref) < tol and rel(s, s_ref) < tol
    gen = torch.Generator().manual_seed(9)
    dy, ds = torch.randn(y.shape, generator=gen), torch.randn(s.shape, generator=gen)
    ((y.float() * dy).sum() + (s * ds).sum()).backward()
    ((y_ref * dy.double()).sum() + (s_ref * ds.double()).sum()).backward()
    for i, (x, rx) in enumerate(zip([*xs, st], [*ref_xs, ref_st], strict=True)):
        assert x.grad is not None and x.grad.dtype == x.dtype and x.grad.shape == x.shape
        assert rel(x.grad, rx.grad) < tol, i


@pytest.mark.parametrize("T", [1, 17, 40])
def test_cuda_op_autograd_v7(emulated_ops, T):
    """T not a multiple of 16 is padded; a shared [H, N, N] state gets its gradient summed over the batch."""
    r, g, k, v, a, b = v7_inputs(2, T, 2, 64, torch.float32, seed=T)
    _compare_autograd(cuda._wkv7_apply, wkv7_naive, (r, g, k, v, a, b), torch.randn(2, 64, 64) * 0.1, 5e-5)


def test_cuda_op_autograd_v7_bf16(emulated_ops):
    r, g, k, v, a, b = v7_inputs(2, 33, 2, 64, torch.bfloat16, seed=4)
    _compare_autograd(cuda._wkv7_apply, wkv7_naive, (r, g, k, v, a, b), torch.randn(2, 64, 64) * 0.1, 1e-2)


@pytest.mark.parametrize("T", [1, 23])
def test_cuda_op_autograd_v6(emulated_ops, T):
    r, g, k, v, u = v6_inputs(2, T, 2, 64, torch.float32, seed=T)
    _compare_autograd(cuda._wkv6_apply, wkv6_naive, (r, g, k, v, u), torch.randn(2, 64, 64) * 0.1, 1e-5)


def test_cuda_op_no_grad_skips_saving(emulated_ops):
    r, g, k, v, a, b = v7_inputs(1, 20, 1, 64, torch.float32)
    with torch.no_grad():
        y, s = cuda._wkv7_apply(r, g, k, v, a, b, None)
    y_ref, s_ref = wkv7_naive(r, g, k, v, a, b)
    assert rel(y, y_ref) < 1e-5 and rel(s, s_ref) < 1e-5


def test_opcheck_fake_implementations_match_the_kernels(emulated_ops):
    """torch.library.opcheck: schemas, fake (meta) outputs vs real outputs, and AOT dispatch."""
    r, g, k, v, a, b = v7_inputs(1, 32, 2, 64, torch.float32)
    s0 = torch.randn(1, 2, 64, 64) * 0.1
    torch.library.opcheck(cuda.wkv7_forward_op, (r, g, k, v, a, b, s0, True))
    torch.library.opcheck(cuda.wkv7_forward_op, (r, g, k, v, a, b, None, False))
    y, sT, ckpt, sa = cuda.wkv7_forward_op(r, g, k, v, a, b, s0, True)
    torch.library.opcheck(cuda.wkv7_backward_op, (r, g, k, v, a, b, torch.randn_like(y), sT, ckpt, sa))
    r6, g6, k6, v6, u = v6_inputs(1, 5, 2, 64, torch.float32)
    torch.library.opcheck(cuda.wkv6_forward_op, (r6, g6, k6, v6, u, None))
    torch.library.opcheck(cuda.wkv6_backward_op, (r6, g6, k6, v6, u, s0, torch.randn_like(r6), None))


def test_torch_compile_traces_the_op(emulated_ops):
    r, g, k, v, a, b = v7_inputs(1, 20, 2, 64, torch.float32)
    r.requires_grad_()
    compiled = torch.compile(cuda._wkv7_apply, backend="aot_eager", fullgraph=True)
    y, s = compiled(r, g, k, v, a, b, None)
    y.sum().backward()
    y_ref, _ = wkv7_naive(r.detach(), g, k, v, a, b)
    assert rel(y, y_ref) < 1e-5
    assert r.grad is not None and torch.isfinite(r.grad).all()
