"""Fixtures for the CPU kernel tests: the CUDA kernels compiled with g++ and run with threads."""

import shutil

import pytest
import torch
from wkv_emulator import (
    Emulator,
    cuda_include_dir,
    emulated_wkv6_backward,
    emulated_wkv6_forward,
    emulated_wkv7_backward,
    emulated_wkv7_forward,
)


@pytest.fixture(scope="session")
def emulator(tmp_path_factory) -> Emulator:
    include = cuda_include_dir()
    if include is None or shutil.which("g++") is None:
        pytest.skip("needs g++ and the CUDA headers (cuda_runtime.h) to run the kernels on the CPU")
    return Emulator(tmp_path_factory.mktemp("wkv-emulator"), include)


@pytest.fixture(scope="session")
def emulated_ops(emulator):
    """Give the rwkv_tune::wkv* custom ops a CPU kernel that runs the emulated CUDA code."""
    from rwkv_tune.model.wkv import cuda

    lib = torch.library.Library("rwkv_tune", "FRAGMENT")
    impls = {
        cuda.wkv7_forward_op: emulated_wkv7_forward, cuda.wkv7_backward_op: emulated_wkv7_backward,
        cuda.wkv6_forward_op: emulated_wkv6_forward, cuda.wkv6_backward_op: emulated_wkv6_backward,
    }
    for op, fn in impls.items():
        torch.library.register_kernel(op, "cpu", lambda *args, fn=fn: fn(emulator, *args), lib=lib)
    yield emulator
    lib._destroy()
