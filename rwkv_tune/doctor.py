"""What this machine can do for rwkv-tune: one check per dependency, and what it enables."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass


@dataclass
class Check:
    name: str
    ok: bool
    version: str
    enables: str
    detail: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _package(name: str, dist: str, enables: str, missing_hint: str) -> Check:
    version = _dist_version(dist) if importlib.util.find_spec(name) else None
    return Check(name, version is not None, version or "-", enables, "" if version else missing_hint)


def _command_version(cmd: str, args: list[str], pick: str) -> str | None:
    path = shutil.which(cmd)
    if not path:
        return None
    try:
        out = subprocess.run([path, *args], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    for line in out.splitlines():
        if pick in line:
            return line.strip().split(pick)[-1].strip().split(",")[0] or line.strip()
    return out.strip().splitlines()[0] if out.strip() else "unknown"


def gpu_checks() -> list[Check]:
    """torch and the GPUs it sees (this imports torch)."""
    version = _dist_version("torch")
    if version is None or importlib.util.find_spec("torch") is None:
        return [Check("torch", False, "-", "everything that trains", "pip install torch")]
    import torch

    cuda_build = torch.version.cuda
    checks = [Check("torch", True, version, "training and merging on CPU" + (" and CUDA" if cuda_build else ""),
                    f"CUDA build {cuda_build}" if cuda_build else "CPU-only build")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            checks.append(Check(f"gpu{i}", True, f"{p.name}", "CUDA kernels, bf16 training",
                                f"{p.total_memory / 2**30:.1f} GiB, sm_{p.major}{p.minor}"))
    else:
        checks.append(Check("gpu", False, "-", "CUDA kernels and fast training",
                            "no CUDA GPU visible: training runs on CPU with the torch WKV op (tiny models only)"))
    from rwkv_tune.model.wkv import cuda, fla

    checks.append(Check("op torch", True, "built in", "the WKV op on any device (chunked PyTorch)"))
    for name, module in (("op cuda", cuda), ("op fla", fla)):
        ok, detail = module.status()
        checks.append(Check(name, ok, "usable" if ok else "-", f"the {name.split()[1]} WKV op", detail))
    return checks


# What needs a GPU and has not yet run on one (docs/gpu-results.md records measurements as they come).
NOT_YET_MEASURED_ON_A_GPU = ("the cuda and fla WKV ops' speed and accuracy on a GPU", "bf16 training on a GPU",
                             "VRAM measured against `rwkv-tune estimate`", "NCCL multi-GPU / multi-node DeepSpeed",
                             "bitsandbytes int8/nf4 on a GPU")


def run_checks(*, with_torch: bool = True) -> list[Check]:
    checks = [Check("python", True, platform.python_version(), "rwkv-tune itself")]
    if with_torch:
        checks += gpu_checks()
    nvcc = _command_version("nvcc", ["--version"], "release ")
    checks.append(Check("nvcc", nvcc is not None, nvcc or "-", "building the CUDA WKV kernels in kernels/",
                        "" if nvcc else "install the CUDA toolkit; without it the torch op is used"))
    checks.append(_package("ninja", "ninja", "JIT-building the CUDA kernels", "pip install ninja"))
    checks.append(_package("deepspeed", "deepspeed", "multi-GPU / multi-node ZeRO training", "pip install deepspeed"))
    checks.append(_package("bitsandbytes", "bitsandbytes", "int8 / nf4 quantized base weights",
                           "pip install bitsandbytes"))
    checks.append(_package("fla", "flash-linear-attention", "the fla (Triton) WKV backend on GPU",
                           "pip install 'rwkv-tune[fla]'"))
    checks.append(_package("pyrwkv_tokenizer", "pyrwkv-tokenizer", "the RWKV World tokenizer (data prepare)",
                           "pip install pyrwkv-tokenizer"))
    checks.append(Check("gpu paths", False, "-", "; ".join(NOT_YET_MEASURED_ON_A_GPU),
                        "not yet measured on a GPU: tested on CPU (kernels compile-checked with nvcc and run in a "
                        "CPU emulator); see docs/gpu-results.md"))
    return checks
