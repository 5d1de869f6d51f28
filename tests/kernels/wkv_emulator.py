"""The CUDA kernels compiled with g++ and run on the CPU (one thread per GPU thread), called through ctypes."""

import ctypes
import shutil
import subprocess
from pathlib import Path

import torch

from rwkv_tune.resources import kernels_dir

EMULATOR_SRC = Path(__file__).with_name("emulate_kernels.cpp")


def cuda_include_dir() -> Path | None:
    """The CUDA toolkit's include folder (cuda_runtime.h, cuda_bf16.h), or None."""
    nvcc = shutil.which("nvcc")
    candidates = [Path(nvcc).resolve().parent.parent / "include"] if nvcc else []
    candidates.append(Path("/usr/local/cuda/include"))
    for c in candidates:
        if (c / "cuda_runtime.h").exists():
            return c
    return None


class Emulator:
    """Builds tests/kernels/emulate_kernels.cpp once per (head size, dtype) and calls it through ctypes."""

    def __init__(self, out: Path, include: Path):
        self.out, self.include = out, include
        self.libs: dict[tuple[int, torch.dtype], ctypes.CDLL] = {}

    def lib(self, head_size: int, dtype: torch.dtype) -> ctypes.CDLL:
        key = (head_size, dtype)
        if key not in self.libs:
            so = self.out / f"emu_n{head_size}_{str(dtype).split('.')[-1]}.so"
            cmd = ["g++", "-std=c++20", "-O2", "-shared", "-fPIC", "-pthread", f"-DWKV_N={head_size}",
                   *(["-DWKV_FP32"] if dtype == torch.float32 else []),
                   f"-I{kernels_dir()}", "-isystem", str(self.include), str(EMULATOR_SRC), "-o", str(so)]
            subprocess.run(cmd, check=True, capture_output=True, text=True)
            self.libs[key] = ctypes.CDLL(str(so))
        return self.libs[key]


def ptr(x: torch.Tensor | None) -> ctypes.c_void_p | None:
    if x is None:
        return None
    assert x.is_contiguous()
    return ctypes.c_void_p(x.data_ptr())


def emulated_wkv7_forward(emu: Emulator, r, g, k, v, a, b, s0, save):
    B, T, H, N = r.shape
    f32 = dict(dtype=torch.float32)
    y, sT = torch.empty_like(r), torch.empty(B, H, N, N, **f32)
    ckpt = torch.empty(B, H, T // 16, N, N, **f32) if save else torch.empty(0, **f32)
    sa = torch.empty(B, T, H, N, **f32) if save else torch.empty(0, **f32)
    emu.lib(N, r.dtype).emulate_wkv7_forward(B, T, H, *map(ptr, (r, g, k, v, a, b, s0, y, sT)),
                                             ptr(ckpt) if save else None, ptr(sa) if save else None)
    return y, sT, ckpt, sa


def emulated_wkv7_backward(emu: Emulator, r, g, k, v, a, b, dy, dsT, ckpt, sa):
    B, T, H, N = r.shape
    dr, dk, dv, da, db = (torch.empty_like(r) for _ in range(5))
    dg, ds0 = torch.empty_like(g), torch.empty(B, H, N, N)
    emu.lib(N, r.dtype).emulate_wkv7_backward(B, T, H, *map(ptr, (r, g, k, v, a, b, dy, dsT, ckpt, sa,
                                                                  dr, dg, dk, dv, da, db, ds0)))
    return dr, dg, dk, dv, da, db, ds0


def emulated_wkv6_forward(emu: Emulator, r, g, k, v, u, s0):
    B, T, H, N = r.shape
    y, sT = torch.empty_like(r), torch.empty(B, H, N, N)
    emu.lib(N, r.dtype).emulate_wkv6_forward(B, T, H, *map(ptr, (r, g, k, v, u, s0, y, sT)))
    return y, sT


def emulated_wkv6_backward(emu: Emulator, r, g, k, v, u, s0, dy, dsT):
    B, T, H, N = r.shape
    dr, dk, dv = (torch.empty_like(r) for _ in range(3))
    dg, du, ds0 = torch.empty_like(g), torch.empty(B, H, N), torch.empty(B, H, N, N)
    emu.lib(N, r.dtype).emulate_wkv6_backward(B, T, H, *map(ptr, (r, g, k, v, u, s0, dy, dsT,
                                                                  dr, dg, dk, dv, du, ds0)))
    return dr, dg, dk, dv, du, ds0
