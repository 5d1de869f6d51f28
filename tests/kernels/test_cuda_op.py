"""The cuda backend on a machine without a GPU: imports, builds nothing, explains itself, falls back."""

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from rwkv_tune.model.wkv import WKV6_OPS, WKV7_OPS, cuda
from rwkv_tune.model.wkv.chunked6 import wkv6_chunked
from rwkv_tune.model.wkv.chunked7 import wkv7_chunked

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")


def v7_args(B=2, T=20, H=2, N=64, device="cpu", dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    x = [torch.randn(B, T, H, N, generator=gen).to(dtype) * 0.3 for _ in range(6)]
    x[1] = -0.6 * torch.sigmoid(x[1])
    x[4] = -torch.nn.functional.normalize(x[4], dim=-1)
    x[5] = -x[4] * 0.5
    return [t.to(device) for t in x]


def test_import_builds_nothing_and_registers_nothing(tmp_path):
    code = ("import os, torch; from rwkv_tune.model.wkv import cuda, WKV7_OPS; "
            "assert cuda.register() is False; assert 'cuda' not in WKV7_OPS; print('ok')")
    env = {"XDG_CACHE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "rwkv-tune").exists()


def test_register_is_a_no_op_without_cuda():
    assert cuda.register() is False
    assert "cuda" not in WKV7_OPS and "cuda" not in WKV6_OPS


def test_cache_dir_respects_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cuda.cache_root() == tmp_path / "rwkv-tune" / "kernels"
    d = cuda.build_dir("wkv7", 64, torch.bfloat16, "90")
    assert d.parent.parent == tmp_path / "rwkv-tune" / "kernels"
    assert d.name.startswith("rwkv_tune_wkv7_n64_bf16_sm90-")
    assert cuda.build_dir("wkv7", 64, torch.float32, "80").name.startswith("rwkv_tune_wkv7_n64_fp32_sm80-")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cuda.cache_root() == Path.home() / ".cache" / "rwkv-tune" / "kernels"


def test_falls_back_to_torch_with_a_warning():
    cuda._warned.clear()
    args = v7_args()
    with pytest.warns(RuntimeWarning, match="Falling back to the torch op"):
        y, s = cuda.wkv7_cuda(*args)
    y_ref, s_ref = wkv7_chunked(*args)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(s, s_ref)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same reason warns once
        cuda.wkv7_cuda(*args)
    r, g, k, v = args[:4]
    u = torch.randn(2, 64) * 0.1
    y6, s6 = cuda.wkv6_cuda(r, g, k, v, u)
    y6_ref, s6_ref = wkv6_chunked(r, g, k, v, u)
    torch.testing.assert_close(y6, y6_ref)


def test_toolchain_messages(monkeypatch, tmp_path):
    from torch.utils import cpp_extension

    assert "CPU-only build" in cuda.toolchain_problem()
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", None)
    assert "nvcc" in cuda.toolchain_problem() and "CUDA_HOME" in cuda.toolchain_problem()
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nvcc").write_text("")
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", str(tmp_path))
    monkeypatch.setattr(cpp_extension, "is_ninja_available", lambda: False)
    assert "pip install ninja" in cuda.toolchain_problem()
    monkeypatch.setattr(cpp_extension, "is_ninja_available", lambda: True)
    assert cuda.toolchain_problem() is None


def test_load_kernel_refuses_clearly():
    with pytest.raises(cuda.KernelUnavailable, match="head size 80"):
        cuda.load_kernel("wkv7", 80, torch.bfloat16, "cpu")
    with pytest.raises(cuda.KernelUnavailable, match="float16"):
        cuda.load_kernel("wkv7", 64, torch.float16, "cpu")
    with pytest.raises(cuda.KernelUnavailable, match="no CUDA GPU"):
        cuda.load_kernel("wkv7", 64, torch.bfloat16, "cpu")
    ok, detail = cuda.status()
    assert not ok and "no CUDA GPU" in detail


@pytest.mark.parametrize("T", [1, 16, 37])
def test_meta_tensors_give_shapes_without_a_build(T):
    """Shape-only dry runs go through the custom ops' fake implementations, forward and backward."""
    r, g, k, v, a, b = (torch.empty(2, T, 3, 64, device="meta", dtype=torch.bfloat16) for _ in range(6))
    r.requires_grad_()
    s0 = torch.empty(3, 64, 64, device="meta", requires_grad=True)
    y, s = cuda.wkv7_cuda(r, g, k, v, a, b, s0.expand(2, 3, 64, 64))
    assert y.shape == (2, T, 3, 64) and y.dtype == torch.bfloat16
    assert s.shape == (2, 3, 64, 64) and s.dtype == torch.float32
    (y.float().sum() + s.sum()).backward()
    assert r.grad.shape == r.shape and s0.grad.shape == s0.shape
    u = torch.empty(3, 64, device="meta", requires_grad=True)
    y6, s6 = cuda.wkv6_cuda(r, g, k, v, u, None)
    (y6.float().sum() + s6.sum()).backward()
    assert y6.shape == (2, T, 3, 64) and u.grad.shape == (3, 64)


def test_custom_op_schemas():
    assert "Tensor? s0" in str(torch.ops.rwkv_tune.wkv7_forward.default._schema)
    assert "Tensor? dsT" in str(torch.ops.rwkv_tune.wkv6_backward.default._schema)
