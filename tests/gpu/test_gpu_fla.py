"""On a lent GPU with flash-linear-attention installed: op "fla" against the torch reference."""

import importlib.util

import pytest
import torch
import torch.nn.functional as F

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(importlib.util.find_spec("fla") is None, reason="flash-linear-attention not installed"),
]


def rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30)).item()


@pytest.fixture(scope="module", autouse=True)
def registered():
    from rwkv_tune.model.wkv import fla

    ok, detail = fla.status()
    if not ok:
        pytest.skip(detail)
    assert fla.register()


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("T", [1, 16, 63, 1024])
def test_wkv7_fla_bf16(T, with_state):
    from rwkv_tune.model.wkv import wkv7

    B, H, N = 2, 4, 64
    gen = torch.Generator(device="cuda").manual_seed(T)
    rnd = lambda *s: torch.randn(*s, generator=gen, device="cuda")  # noqa: E731
    r, k, v = rnd(B, T, H, N) * 0.5, rnd(B, T, H, N) * 0.5, rnd(B, T, H, N)
    g = -0.6065306597126334 * torch.sigmoid(rnd(B, T, H, N) * 2)
    kk = F.normalize(rnd(B, T, H, N), dim=-1)
    a, b = -kk, kk * torch.rand(B, T, H, N, generator=gen, device="cuda")
    inputs = [x.to(torch.bfloat16) for x in (r, g, k, v, a, b)]
    state = rnd(B, H, N, N) * 0.1 if with_state else None
    xs = [x.clone().requires_grad_() for x in inputs]
    y, s = wkv7(*xs, state, op="fla")
    ref = [x.double().requires_grad_() for x in inputs]
    y_ref, s_ref = wkv7(*ref, None if state is None else state.double())
    assert rel(y, y_ref) < 2e-2 and rel(s, s_ref) < 2e-2
    dy = torch.randn_like(y_ref)
    (y.double() * dy).sum().backward()
    (y_ref * dy).sum().backward()
    for name, x, rx in zip("r g k v a b".split(), xs, ref, strict=True):
        assert rel(x.grad, rx.grad) < 5e-2, name


@pytest.mark.parametrize("T", [1, 100])
def test_wkv6_fla_bf16(T):
    from rwkv_tune.model.wkv import WKV6_OPS, wkv6

    if "fla" not in WKV6_OPS:
        pytest.skip("this fla has no chunk_rwkv6")
    B, H, N = 2, 4, 64
    gen = torch.Generator(device="cuda").manual_seed(T)
    rnd = lambda *s: torch.randn(*s, generator=gen, device="cuda")  # noqa: E731
    r, k, v = (rnd(B, T, H, N).mul(0.5).to(torch.bfloat16) for _ in range(3))
    g = -torch.exp(torch.rand(B, T, H, N, generator=gen, device="cuda") * 4 - 3)
    u = rnd(H, N) * 0.3
    state = rnd(B, H, N, N) * 0.1
    y, s = wkv6(r, g, k, v, u, state, op="fla")
    y_ref, s_ref = wkv6(r.double(), g.double(), k.double(), v.double(), u.double(), state.double())
    assert rel(y, y_ref) < 2e-2 and rel(s, s_ref) < 2e-2
