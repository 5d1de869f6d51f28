"""Every CUDA source in kernels/ compiles: each .cu with nvcc for sm_80 and sm_90, each .cpp binding with g++.

The .cu files are plain CUDA C++ (no torch headers), so nvcc compiles them alone. The .cpp bindings
need torch's headers; a CPU-only torch lacks one generated CUDA header (c10/cuda/impl/
cuda_cmake_macros.h), which the check writes into a temporary include folder.
"""

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
import torch.utils.cpp_extension as cpp_extension
from wkv_emulator import cuda_include_dir

from rwkv_tune.model.wkv.cuda import NVCC_FLAGS, kernel_defines
from rwkv_tune.resources import kernels_dir

KERNELS = kernels_dir()
CU_FILES = sorted(p.name for p in KERNELS.glob("*.cu"))
CPP_FILES = sorted(p.name for p in KERNELS.glob("*.cpp"))
VARIANTS = {"bf16": kernel_defines(64, torch.bfloat16), "fp32": kernel_defines(64, torch.float32)}
ARCHS = ["-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90"]


def test_kernel_sources_are_present():
    assert {"wkv7.cu", "wkv6.cu"} <= set(CU_FILES)
    assert {"wkv7_op.cpp", "wkv6_op.cpp"} <= set(CPP_FILES)


@pytest.mark.parametrize("name", sorted(p.name for p in [*KERNELS.glob("*.cu"), *KERNELS.glob("*.cuh")]))
def test_cuda_sources_do_not_include_torch(name):
    text = (KERNELS / name).read_text()
    for header in ("<torch/", "<ATen/", "<c10/", "wkv_op_utils.h"):
        assert header not in text, f"{name} includes {header}: .cu files must compile without torch"


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", CU_FILES)
def test_cu_compiles_with_nvcc_for_sm80_and_sm90(name, variant, tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not installed")
    # the flags the JIT build uses (torch's COMMON_NVCC_FLAGS, -fPIC, C++20, ours), for two archs at once
    cmd = [nvcc, "-c", str(KERNELS / name), "-o", str(tmp_path / "out.o"), *cpp_extension.COMMON_NVCC_FLAGS,
           "--compiler-options", "-fPIC", "-std=c++20", *NVCC_FLAGS, *ARCHS, f"-I{KERNELS}", *VARIANTS[variant]]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"nvcc {name} [{variant}] sm_80+sm_90: {time.perf_counter() - start:.1f} s")


@pytest.fixture(scope="module")
def torch_includes(tmp_path_factory) -> list[str]:
    cuda_inc = cuda_include_dir()
    if shutil.which("g++") is None or cuda_inc is None:
        pytest.skip("needs g++ and the CUDA headers")
    flags = [f"-isystem{p}" for p in cpp_extension.include_paths()]
    macros = "c10/cuda/impl/cuda_cmake_macros.h"
    if not any((Path(p) / macros).exists() for p in cpp_extension.include_paths()):
        stub = tmp_path_factory.mktemp("torch-stub")
        (stub / macros).parent.mkdir(parents=True)
        (stub / macros).write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
        flags.append(f"-isystem{stub}")
    return [*flags, f"-isystem{cuda_inc}"]


@pytest.mark.parametrize("name", CPP_FILES)
def test_cpp_binding_passes_syntax_check(name, torch_includes):
    cmd = ["g++", "-fsyntax-only", "-std=c++20", "-DTORCH_EXTENSION_NAME=rwkv_tune_syntax_check",
           "-DTORCH_API_INCLUDE_EXTENSION_H", f"-I{KERNELS}", *torch_includes, str(KERNELS / name)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"g++ -fsyntax-only {name}: {time.perf_counter() - start:.1f} s")
