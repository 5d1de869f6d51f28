"""The fla backend: reports itself unavailable cleanly, refuses rwkv-fla, and maps layouts correctly.

The layout test runs our wrapper against a stand-in `fla` package written here, which implements
fla-org's documented conventions (log-decay w, [B, H, K, V] states, scale, refusal of T < H) with a
plain loop in fla's own layout.
"""

import textwrap

import pytest
import torch

from rwkv_tune.model.wkv import WKV7_OPS, fla
from rwkv_tune.model.wkv.naive import wkv6_naive, wkv7_naive

FAKE_RWKV7 = '''
import torch

def chunk_rwkv7(r, w, k, v, a, b, scale=1.0, initial_state=None, output_final_state=False, cu_seqlens=None,
                head_first=False):
    B, T, H, K = r.shape
    if T < H:
        raise DeprecationWarning("seq_len < num_heads: head-first input?")
    S = torch.zeros(B, H, K, v.shape[-1]) if initial_state is None else initial_state.clone()  # [K, V]
    outs = []
    for t in range(T):
        at, bt, kt, vt = a[:, t].float(), b[:, t].float(), k[:, t].float(), v[:, t].float()
        aS = (at.unsqueeze(-2) @ S)                                  # a^T S   [B, H, 1, V]
        S = S * w[:, t].float().exp().unsqueeze(-1) + kt.unsqueeze(-1) * vt.unsqueeze(-2) + bt.unsqueeze(-1) * aS
        outs.append(scale * (r[:, t].float().unsqueeze(-2) @ S).squeeze(-2))
    return torch.stack(outs, 1).to(r.dtype), (S if output_final_state else None)
'''

FAKE_RWKV6 = '''
import torch

def chunk_rwkv6(r, k, v, w, u, scale=None, initial_state=None, output_final_state=False, cu_seqlens=None,
                head_first=False):
    B, T, H, K = r.shape
    if T < H:
        raise DeprecationWarning("seq_len < num_heads: head-first input?")
    scale = K ** -0.5 if scale is None else scale
    S = torch.zeros(B, H, K, v.shape[-1]) if initial_state is None else initial_state.clone()
    outs = []
    for t in range(T):
        kv = k[:, t].float().unsqueeze(-1) * v[:, t].float().unsqueeze(-2)
        outs.append(scale * (r[:, t].float().unsqueeze(-2) @ (S + u.float().unsqueeze(-1) * kv)).squeeze(-2))
        S = S * w[:, t].float().exp().unsqueeze(-1) + kv
    return torch.stack(outs, 1).to(r.dtype), (S if output_final_state else None)
'''

RWKV_FLA_RWKV7 = '''
def chunk_rwkv7(r, k, v, a, b, w=None, log_w=None, scale=1.0, initial_state=None, output_final_state=True,
                cu_seqlens=None, head_first=False):
    raise AssertionError("must not be called")
'''


def write_fake_fla(root, rwkv7_src, rwkv6_src=None):
    for pkg in ("fla", "fla/ops", "fla/ops/rwkv7", "fla/ops/rwkv6"):
        (root / pkg).mkdir(parents=True, exist_ok=True)
        (root / pkg / "__init__.py").write_text("")
    (root / "fla/ops/rwkv7/__init__.py").write_text(textwrap.dedent(rwkv7_src))
    if rwkv6_src:
        (root / "fla/ops/rwkv6/__init__.py").write_text(textwrap.dedent(rwkv6_src))


@pytest.fixture
def fake_fla(tmp_path, monkeypatch):
    def install(rwkv7_src=FAKE_RWKV7, rwkv6_src=FAKE_RWKV6):
        write_fake_fla(tmp_path, rwkv7_src, rwkv6_src)
        monkeypatch.syspath_prepend(str(tmp_path))
        fla._functions.cache_clear()

    yield install
    fla._functions.cache_clear()
    import sys

    for name in [m for m in sys.modules if m == "fla" or m.startswith("fla.")]:
        del sys.modules[name]


def test_reports_unavailable_cleanly():
    import importlib.util

    if importlib.util.find_spec("fla") is not None:
        pytest.skip("an fla package is installed here")
    fla._functions.cache_clear()
    ok, detail = fla.status()
    assert not ok and "pip install 'rwkv-tune[fla]'" in detail
    assert fla.register() is False and "fla" not in WKV7_OPS
    with pytest.raises(fla.FlaUnavailable, match="not installed"):
        fla.wkv7_fla(*(torch.zeros(1, 1, 1, 64) for _ in range(6)))


def test_refuses_rwkv_fla_by_distribution(fake_fla, monkeypatch):
    fake_fla()
    real = fla._dist_version
    monkeypatch.setattr(fla, "_dist_version", lambda d: "0.7.202508221413" if d == "rwkv-fla" else real(d))
    ok, detail = fla.status()
    assert not ok and "rwkv-fla" in detail and "pip uninstall rwkv-fla" in detail


def test_refuses_rwkv_fla_by_signature(fake_fla):
    fake_fla(RWKV_FLA_RWKV7)
    ok, detail = fla.status()
    assert not ok and "not the expected" in detail


def test_needs_a_gpu_even_when_installed(fake_fla):
    fake_fla()
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    ok, detail = fla.status()
    assert not ok and "CUDA GPU" in detail


@pytest.mark.parametrize("T", [1, 5, 19])
def test_v7_layouts_state_transpose_and_scale(fake_fla, T):
    fake_fla()
    B, H, N = 2, 3, 8
    gen = torch.Generator().manual_seed(T)
    r, k, v = (torch.randn(B, T, H, N, generator=gen) for _ in range(3))
    g = -0.6 * torch.rand(B, T, H, N, generator=gen)
    kk = torch.nn.functional.normalize(torch.randn(B, T, H, N, generator=gen), dim=-1)
    a, b = -kk, kk * 0.5
    s0 = torch.randn(B, H, N, N, generator=gen)  # official [value, key]
    y, s = fla.wkv7_fla(r, g, k, v, a, b, s0)
    y_ref, s_ref = wkv7_naive(r, g, k, v, a, b, s0)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s, s_ref, rtol=1e-5, atol=1e-5)


def test_v6_layouts_and_scale(fake_fla):
    fake_fla()
    B, T, H, N = 2, 6, 3, 8
    gen = torch.Generator().manual_seed(1)
    r, k, v = (torch.randn(B, T, H, N, generator=gen) for _ in range(3))
    g = -torch.exp(torch.randn(B, T, H, N, generator=gen))
    u = torch.randn(H, N, generator=gen)
    s0 = torch.randn(B, H, N, N, generator=gen)  # [key, value]
    y, s = fla.wkv6_fla(r, g, k, v, u, s0)
    y_ref, s_ref = wkv6_naive(r, g, k, v, u, s0)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s, s_ref, rtol=1e-5, atol=1e-5)
