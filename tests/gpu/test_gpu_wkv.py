"""On a lent GPU: the CUDA kernels (nvcc build) against the torch reference, forward and backward.

Run with `pytest -m gpu tests/gpu` (docs/gpu-results.md). bf16 kernels: relative error <= 1e-2;
fp32 kernels: <= 1e-4. The reference is the chunked torch op in float64 on the same (bf16-rounded)
inputs.
"""

import pytest
import torch
import torch.nn.functional as F

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.filterwarnings("error:CUDA WKV kernels not used"),  # a silent fallback would test the torch op
]

V7_MIN_LOG_DECAY = -0.6065306597126334
T_VALUES = [16, 17, 64, 1000, 1024, 4096]
STATES = ["none", "batch", "shared"]


@pytest.fixture(scope="module", autouse=True)
def registered():
    from rwkv_tune.model.wkv import cuda

    assert cuda.register(), "cuda.register() must succeed on a GPU machine"


def rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30)).item()


def v7_inputs(B, T, H, N, dtype, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=gen, device="cuda")  # noqa: E731
    r, k, v = rnd(B, T, H, N) * 0.5, rnd(B, T, H, N) * 0.5, rnd(B, T, H, N)
    g = V7_MIN_LOG_DECAY * torch.sigmoid(rnd(B, T, H, N) * 2)
    kk = F.normalize(rnd(B, T, H, N), dim=-1)
    alpha = torch.rand(B, T, H, N, generator=gen, device="cuda")
    r, k, v, a, b = (x.to(dtype) for x in (r, k, v, -kk, kk * alpha))
    return [r, g, k, v, a, b]


def v6_inputs(B, T, H, N, dtype, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=gen, device="cuda")  # noqa: E731
    r, k, v = (rnd(B, T, H, N).mul(0.5).to(dtype) for _ in range(3))
    g = -torch.exp(torch.rand(B, T, H, N, generator=gen, device="cuda") * 7 - 5)
    return [r, g, k, v, rnd(H, N) * 0.3]


def make_state(kind, B, H, N):
    if kind == "none":
        return None
    shape = (B, H, N, N) if kind == "batch" else (H, N, N)
    return (torch.randn(shape, device="cuda") * 0.1).requires_grad_()


def check(fn, ref_fn, inputs, state, op, tol):
    """Forward y and final state, then gradients of every input and of the initial state."""
    xs = [x.detach().clone().requires_grad_() for x in inputs]
    y, s = fn(*xs, state, op=op)
    ref_xs = [x.detach().double().requires_grad_() for x in inputs]
    ref_state = None if state is None else state.detach().double().requires_grad_()
    y_ref, s_ref = ref_fn(*ref_xs, ref_state, op="torch")
    assert y.dtype == inputs[0].dtype and s.dtype == torch.float32
    errors = {"y": rel(y, y_ref), "state": rel(s, s_ref)}
    dy, ds = torch.randn_like(y_ref), torch.randn_like(s_ref)
    ((y.double() * dy).sum() + (s.double() * ds).sum()).backward()
    ((y_ref * dy).sum() + (s_ref * ds).sum()).backward()
    names = "r g k v a b" if len(inputs) == 6 else "r g k v u"
    for name, x, rx in zip(names.split(), xs, ref_xs, strict=True):
        errors["d" + name] = rel(x.grad, rx.grad)
    if state is not None:
        errors["dstate"] = rel(state.grad, ref_state.grad)
    bad = {k: v for k, v in errors.items() if not v <= tol}
    assert not bad, f"relative errors above {tol}: {bad} (all: {errors})"


@pytest.mark.parametrize("state_kind", STATES)
@pytest.mark.parametrize("T", T_VALUES)
def test_wkv7_cuda_bf16(T, state_kind):
    from rwkv_tune.model.wkv import wkv7

    B, H, N = 2, 4, 64
    check(wkv7, wkv7, v7_inputs(B, T, H, N, torch.bfloat16, seed=T), make_state(state_kind, B, H, N), "cuda", 1e-2)


@pytest.mark.parametrize("state_kind", ["none", "batch"])
@pytest.mark.parametrize("T", [16, 100, 1024])
def test_wkv7_cuda_fp32(T, state_kind):
    from rwkv_tune.model.wkv import wkv7

    B, H, N = 2, 4, 64
    check(wkv7, wkv7, v7_inputs(B, T, H, N, torch.float32, seed=T), make_state(state_kind, B, H, N), "cuda", 1e-4)


@pytest.mark.parametrize("state_kind", STATES)
@pytest.mark.parametrize("T", T_VALUES)
def test_wkv6_cuda_bf16(T, state_kind):
    from rwkv_tune.model.wkv import wkv6

    B, H, N = 2, 4, 64
    check(wkv6, wkv6, v6_inputs(B, T, H, N, torch.bfloat16, seed=T), make_state(state_kind, B, H, N), "cuda", 1e-2)


@pytest.mark.parametrize("T", [16, 333])
def test_wkv6_cuda_fp32(T):
    from rwkv_tune.model.wkv import wkv6

    B, H, N = 2, 4, 64
    check(wkv6, wkv6, v6_inputs(B, T, H, N, torch.float32, seed=T), make_state("batch", B, H, N), "cuda", 1e-4)


def test_wkv5_static_decay_through_wkv6():
    from rwkv_tune.model.wkv import wkv6

    B, T, H, N = 2, 50, 4, 64
    r, _, k, v, u = v6_inputs(B, T, H, N, torch.bfloat16)
    static = (-torch.exp(torch.rand(H, N, device="cuda") * 4 - 3)).requires_grad_()
    y, s = wkv6(r, static.expand(B, T, H, N), k, v, u, op="cuda")
    y_ref, s_ref = wkv6(r.double(), static.double().expand(B, T, H, N), k.double(), v.double(), u.double())
    assert rel(y, y_ref) < 1e-2 and rel(s, s_ref) < 1e-2
    y.float().sum().backward()
    assert static.grad is not None and torch.isfinite(static.grad).all()


def test_head_size_32():
    from rwkv_tune.model.wkv import wkv7

    check(wkv7, wkv7, v7_inputs(1, 64, 2, 32, torch.bfloat16), make_state("batch", 1, 2, 32), "cuda", 1e-2)


def test_build_is_cached_per_variant():
    from rwkv_tune.model.wkv import cuda

    arch = "".join(map(str, torch.cuda.get_device_capability()))
    cuda.load_kernel("wkv7", 64, torch.bfloat16, "cuda")
    assert cuda.build_dir("wkv7", 64, torch.bfloat16, arch).is_dir()


def test_model_forward_backward_cuda_vs_torch():
    """A small v7 model in bf16: logits and every parameter's gradient agree between op=cuda and op=torch."""
    from rwkv_tune.model import load_model
    from rwkv_tune.model.loss import chunked_cross_entropy
    from rwkv_tune.testing import make_state_dict

    sd = make_state_dict(7, n_layer=2, n_embd=256, vocab_size=500, seed=1, dtype=torch.bfloat16)
    idx = torch.randint(0, 500, (2, 129), device="cuda")
    results = {}
    for op in ("torch", "cuda"):
        model = load_model({k: v.clone() for k, v in sd.items()}, op=op, device="cuda")
        hidden, _ = model.hidden(idx[:, :-1])
        loss = chunked_cross_entropy(hidden, model.head.weight, idx[:, 1:], l2wrap=True)
        loss.backward()
        results[op] = (loss.float().item(),
                       {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None})
    assert abs(results["cuda"][0] - results["torch"][0]) < 1e-2 * abs(results["torch"][0])
    worst = max(rel(results["cuda"][1][n], g) for n, g in results["torch"][1].items() if g.norm() > 0)
    assert worst < 5e-2, worst
