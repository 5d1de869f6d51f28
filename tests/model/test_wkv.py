"""The chunked WKV ops (v7, v6/v5) against the per-token loop in float64, plus the dispatch contract."""

import functools

import pytest
import torch
import torch.nn.functional as F

from rwkv_tune.model.wkv import WKV7_OPS, register_op, wkv6, wkv7
from rwkv_tune.model.wkv.chunked6 import wkv6_chunked
from rwkv_tune.model.wkv.chunked7 import wkv7_chunked
from rwkv_tune.model.wkv.naive import wkv6_naive, wkv7_naive

V7_MIN_G = -0.6065306597126334  # -exp(-0.5): the v7 soft clamp
V7_NAMES = ["r", "g", "k", "v", "a", "b", "state"]
V6_NAMES = ["r", "g", "k", "v", "u", "state"]


def v7_inputs(B, T, H, N, seed=0, dtype=torch.float32):
    """Random RWKV-7-like inputs (reference/wkv-chunked.md §4): r, g, k, v, a, b, state."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    g = V7_MIN_G * torch.sigmoid(2 * randn(B, T, H, N))
    kappa = F.normalize(randn(1, 1, H, N) + 0.5 * randn(B, T, H, N), dim=-1)
    alpha = torch.sigmoid(randn(B, T, H, N))
    r, k, v = randn(B, T, H, N) / N**0.5, randn(B, T, H, N) / N**0.5, randn(B, T, H, N)
    xs = (r, g, k, v, -kappa, kappa * alpha, 0.1 * randn(B, H, N, N))
    return tuple(x.to(dtype) for x in xs)


def v6_inputs(B, T, H, N, seed=0, w_mean=-1.0, w_std=1.5, dtype=torch.float32):
    """Random RWKV-6-like inputs: r, g = -exp(w), k, v, u, state."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    g = -torch.exp(w_mean + w_std * randn(B, T, H, N))
    r, k, v = randn(B, T, H, N) / N**0.5, randn(B, T, H, N) / N**0.5, randn(B, T, H, N)
    xs = (r, g, k, v, 0.5 * randn(H, N), 0.1 * randn(B, H, N, N))
    return tuple(x.to(dtype) for x in xs)


def fwd_bwd(fn, inputs, seed=1):
    """y, final state and the gradient of every input for loss = sum(y*gy) + sum(S*gS), random gy, gS."""
    xs = [x.detach().clone().requires_grad_() for x in inputs]
    y, s = fn(*xs)
    gen = torch.Generator().manual_seed(seed)
    gy = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y.dtype)
    gs = torch.randn(s.shape, generator=gen, dtype=torch.float64).to(s.dtype)
    ((y * gy).sum() + (s * gs).sum()).backward()
    return y.detach(), s.detach(), [x.grad for x in xs]


def rel_err(actual, expected, scale=None):
    scale = expected.abs().max() if scale is None else scale
    return ((actual.double() - expected.double()).abs().max() / scale.double().clamp_min(1e-30)).item()


def assert_matches_oracle(fn, oracle, inputs, names, fwd_tol=1e-5, grad_tol=1e-4):
    """fn on fp32 inputs vs oracle on the same inputs in fp64: y and S relative to max|y|, grads each."""
    y, s, grads = fwd_bwd(fn, inputs)
    y_ref, s_ref, grads_ref = fwd_bwd(oracle, [x.double() for x in inputs])
    scale = y_ref.abs().max()
    assert rel_err(y, y_ref, scale) < fwd_tol, f"y: {rel_err(y, y_ref, scale):.2e}"
    assert rel_err(s, s_ref, scale) < fwd_tol, f"state: {rel_err(s, s_ref, scale):.2e}"
    for name, gr, gr_ref in zip(names, grads, grads_ref, strict=True):
        assert torch.isfinite(gr).all(), name
        assert rel_err(gr, gr_ref) < grad_tol, f"grad {name}: {rel_err(gr, gr_ref):.2e}"


# ---- chunked vs the float64 loop, RWKV-shaped inputs, T not a multiple of the chunk ----


@pytest.mark.parametrize("N", [64, 32])
def test_v7_chunked_matches_fp64_loop(N):
    assert_matches_oracle(wkv7_chunked, wkv7_naive, v7_inputs(2, 203, 3, N), V7_NAMES)


@pytest.mark.parametrize("N", [64, 32])
def test_v6_chunked_matches_fp64_loop(N):
    assert_matches_oracle(wkv6_chunked, wkv6_naive, v6_inputs(2, 203, 3, N), V6_NAMES)


@pytest.mark.parametrize("w_mean", [3.0, 5.0, 7.0])
def test_v6_large_decays_stay_exact(w_mean):
    # g = -exp(w) down to about -1e3..-1e4 per step: overflows any e^{-G} factorisation, and
    # loses precision in differences of cumulative sums.
    inputs = v6_inputs(2, 203, 2, 32, w_mean=w_mean, w_std=1.0)
    assert inputs[1].min() < -20
    assert_matches_oracle(wkv6_chunked, wkv6_naive, inputs, V6_NAMES)


def test_v6_mixed_tiny_and_huge_decays():
    # single huge steps among near-1 decays: exponents taken as differences of cumulative sums
    # (G_t - G_s) would lose ulp(1e4) ~ 1e-3 here; direct sums keep ~1e-7
    r, g, k, v, u, s = v6_inputs(2, 203, 2, 32, w_mean=-4.0, w_std=1.0)
    spikes = torch.rand(g.shape, generator=torch.Generator().manual_seed(3)) < 0.05
    g = torch.where(spikes, -1e4, g)
    assert_matches_oracle(wkv6_chunked, wkv6_naive, (r, g, k, v, u, s), V6_NAMES)


def test_v5_static_decay_broadcast():
    r, g, k, v, u, s = v6_inputs(2, 70, 2, 32)
    g = g[0, 0].expand(r.shape)  # v5: one log-decay per head and channel
    y, st = wkv6(r, g, k, v, u, s)
    y_ref, st_ref = wkv6_naive(*(x.double() for x in (r, g, k, v, u, s)))
    assert rel_err(y, y_ref) < 1e-5
    assert rel_err(st, st_ref, y_ref.abs().max()) < 1e-5


# ---- gradcheck in float64 at a tiny size, small chunks, with a state ----


def test_v7_gradcheck():
    inputs = [x.requires_grad_() for x in v7_inputs(1, 7, 1, 4, dtype=torch.float64)]
    assert torch.autograd.gradcheck(functools.partial(wkv7_chunked, chunk_size=4), inputs)


def test_v6_gradcheck():
    inputs = [x.requires_grad_() for x in v6_inputs(1, 7, 1, 4, w_std=1.0, dtype=torch.float64)]
    assert torch.autograd.gradcheck(functools.partial(wkv6_chunked, chunk_size=4, sub_chunk=2), inputs)


# ---- edge cases ----


@pytest.mark.parametrize("T", [1, 2, 13, 32, 64])
def test_v7_sequence_lengths(T):
    assert_matches_oracle(wkv7_chunked, wkv7_naive, v7_inputs(2, T, 2, 32, seed=T), V7_NAMES)


@pytest.mark.parametrize("T", [1, 2, 5, 13, 32, 64])
def test_v6_sequence_lengths(T):
    assert_matches_oracle(wkv6_chunked, wkv6_naive, v6_inputs(2, T, 2, 32, seed=T), V6_NAMES)


@pytest.mark.parametrize("chunk_size", [16, 64])
def test_v7_other_chunk_sizes(chunk_size):
    fn = functools.partial(wkv7_chunked, chunk_size=chunk_size)
    assert_matches_oracle(fn, wkv7_naive, v7_inputs(1, 150, 2, 32), V7_NAMES)


@pytest.mark.parametrize("chunk_size, sub_chunk", [(16, 4), (64, 16), (8, 8)])
def test_v6_other_chunk_sizes(chunk_size, sub_chunk):
    fn = functools.partial(wkv6_chunked, chunk_size=chunk_size, sub_chunk=sub_chunk)
    assert_matches_oracle(fn, wkv6_naive, v6_inputs(1, 150, 2, 32), V6_NAMES)


@pytest.mark.parametrize("g_value", [V7_MIN_G, -1e-7])
def test_v7_extreme_decays(g_value):
    r, g, k, v, a, b, s = v7_inputs(2, 100, 2, 64)
    g = torch.full_like(g, g_value)
    assert_matches_oracle(wkv7_chunked, wkv7_naive, (r, g, k, v, a, b, s), V7_NAMES)


def test_v7_adversarial_kappa():
    # near-parallel kappa and alpha -> 1 make M_ab close to minus the strict-lower ones matrix;
    # half the channels at the strongest decay, and large |r|, |k|
    r, g, k, v, a, b, s = v7_inputs(2, 203, 2, 64)
    kappa = F.normalize(torch.ones_like(a) + 0.01 * torch.randn_like(a), dim=-1)
    a, b = -kappa, 0.999 * kappa
    g[..., ::2] = V7_MIN_G
    r, k = r * 30 / r.abs().max(), k * 30 / k.abs().max()
    assert_matches_oracle(wkv7_chunked, wkv7_naive, (r, g, k, v, a, b, s), V7_NAMES)


def test_padding_leaves_state_alone():
    # T = 33 pads 31 identity steps; the final state must be that of step 33, not later
    for fn, oracle, inputs in [
        (wkv7_chunked, wkv7_naive, v7_inputs(1, 33, 1, 8)),
        (wkv6_chunked, wkv6_naive, v6_inputs(1, 33, 1, 8)),
    ]:
        _, s = fn(*inputs)
        _, s_ref = oracle(*(x.double() for x in inputs))
        assert rel_err(s, s_ref) < 1e-5


@pytest.mark.parametrize("version", ["v7", "v6"])
def test_shared_state_gradient_is_sum_over_batch(version):
    op, inputs = (wkv7, v7_inputs(3, 50, 2, 16)) if version == "v7" else (wkv6, v6_inputs(3, 50, 2, 16))
    *xs, _ = (x.double() for x in inputs)
    shared = torch.randn(2, 16, 16, dtype=torch.float64, requires_grad=True)
    y, s = op(*xs, shared)
    (y.square().sum() + s.square().sum()).backward()
    per_sample = torch.zeros_like(shared)
    for i in range(3):
        one = shared.detach().clone().requires_grad_()
        seq = [x if x.dim() == 2 else x[i : i + 1] for x in xs]  # u [H, N] is not per sample
        y, s = op(*seq, one)
        (y.square().sum() + s.square().sum()).backward()
        per_sample += one.grad
    assert rel_err(shared.grad, per_sample) < 1e-10


@pytest.mark.parametrize("version", ["v7", "v6"])
def test_split_sequence_carries_state(version):
    op, inputs = (wkv7, v7_inputs(2, 203, 2, 32)) if version == "v7" else (wkv6, v6_inputs(2, 203, 2, 32))
    *xs, s0 = inputs
    y, s = op(*xs, s0)
    cut = 77

    def part(x, sl):
        return x if x.dim() == 2 else x[:, sl]

    y1, s1 = op(*(part(x, slice(None, cut)) for x in xs), s0)
    y2, s2 = op(*(part(x, slice(cut, None)) for x in xs), s1)
    assert rel_err(torch.cat([y1, y2], dim=1), y) < 1e-5
    assert rel_err(s2, s, y.abs().max()) < 1e-5


# ---- the dispatch contract ----


def test_dispatch_ops_agree_and_dtypes():
    r, g, k, v, a, b, s = v7_inputs(2, 40, 2, 16)
    y_t, s_t = wkv7(r, g, k, v, a, b, s, op="torch")
    y_n, s_n = wkv7(r, g, k, v, a, b, s, op="naive")
    assert rel_err(y_t, y_n) < 1e-5 and rel_err(s_t, s_n, y_n.abs().max()) < 1e-5
    r6, g6, k6, v6, u6, s6 = v6_inputs(2, 40, 2, 16)
    y_t, s_t = wkv6(r6, g6, k6, v6, u6, s6, op="torch")
    y_n, s_n = wkv6(r6, g6, k6, v6, u6, s6, op="naive")
    assert rel_err(y_t, y_n) < 1e-5 and rel_err(s_t, s_n, y_n.abs().max()) < 1e-5

    bf = [x.bfloat16() for x in (r, g, k, v, a, b)]
    y, st = wkv7(*bf)
    assert y.dtype == torch.bfloat16 and y.shape == r.shape
    assert st.dtype == torch.float32 and st.shape == (2, 2, 16, 16)
    y_ref, _ = wkv7_naive(*(x.double() for x in bf))
    assert rel_err(y, y_ref) < 1e-2  # bf16 output rounding only; the math ran in fp32


def test_no_grad_and_zero_state():
    inputs = v7_inputs(1, 40, 2, 16)
    with torch.no_grad():
        y, s = wkv7(*inputs[:-1])
        y0, s0 = wkv7(*inputs[:-1], torch.zeros(2, 16, 16))
    assert not y.requires_grad
    assert torch.equal(y, y0) and torch.equal(s, s0)
    inputs6 = v6_inputs(1, 40, 2, 16)
    with torch.no_grad():
        y, s = wkv6(*inputs6[:-1])
    y_ref, s_ref = wkv6_naive(*(x.double() for x in inputs6[:-1]))
    assert rel_err(y, y_ref) < 1e-5 and rel_err(s, s_ref, y_ref.abs().max()) < 1e-5


def test_naive_fp32_loop_matches_fp64():
    inputs = v7_inputs(1, 100, 2, 32)
    y, s = wkv7_naive(*inputs)
    y_ref, s_ref = wkv7_naive(*(x.double() for x in inputs))
    assert y.dtype == torch.float32 and y_ref.dtype == torch.float64
    assert rel_err(y, y_ref) < 1e-5 and rel_err(s, s_ref, y_ref.abs().max()) < 1e-5


def test_unknown_op_and_bad_shapes_raise():
    r, g, k, v, a, b, s = v7_inputs(1, 5, 2, 8)
    with pytest.raises(ValueError, match="'nope'.*available: naive, torch"):
        wkv7(r, g, k, v, a, b, op="nope")
    with pytest.raises(ValueError, match="'cuda'.*GPU"):
        wkv7(r, g, k, v, a, b, op="cuda")
    with pytest.raises(ValueError, match="input k"):
        wkv7(r, g, k[:, :4], v, a, b)
    with pytest.raises(ValueError, match="state"):
        wkv7(r, g, k, v, a, b, s[:, :1])
    r6, g6, k6, v6, u6, _ = v6_inputs(1, 5, 2, 8)
    with pytest.raises(ValueError, match="bonus u"):
        wkv6(r6, g6, k6, v6, u6[0])
    with pytest.raises(ValueError, match="'fla'"):
        wkv6(r6, g6, k6, v6, u6, op="fla")


def test_register_op():
    calls = []

    def fake(*args):
        calls.append(len(args))
        return wkv7_naive(*args)

    register_op("fake", wkv7=fake)
    try:
        r, g, k, v, a, b, s = v7_inputs(2, 3, 1, 4)
        y, st = wkv7(r, g, k, v, a, b, s[0], op="fake")  # a shared [H, N, N] state arrives expanded
        assert calls == [7] and st.shape == (2, 1, 4, 4)
    finally:
        del WKV7_OPS["fake"]
