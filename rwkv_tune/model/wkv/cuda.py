"""The "cuda" WKV op: the kernels in kernels/ (wkv7.cu, wkv6.cu), built on first use with ninja.

Each (kernel, head size, I/O dtype, GPU arch) is compiled once by `torch.utils.cpp_extension.load`
into the user's cache (`$XDG_CACHE_HOME/rwkv-tune/kernels/`, default `~/.cache/...`) and loaded as a
small torch op library. Python wraps it in the custom ops `rwkv_tune::wkv7_forward/backward` and
`rwkv_tune::wkv6_forward/backward`, which have fake (meta) implementations so `torch.compile` and
meta-device dry runs never need the build, and in autograd Functions that wire the backward.

When the kernels cannot be used (no GPU, no nvcc or ninja, an unsupported head size, a failed
build) `wkv7_cuda` / `wkv6_cuda` warn once and run the torch op instead. Importing this module never
builds anything. Kernel inputs: bf16 (or fp32) r, k, v, a, b; the log-decay g = log(decay) in fp32
(not RWKV-LM's w: decay = exp(g) inside the kernel); fp32 states; v7 T padded here to a multiple of 16.
"""

import hashlib
import os
import threading
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from rwkv_tune.model.wkv.chunked6 import wkv6_chunked
from rwkv_tune.model.wkv.chunked7 import wkv7_chunked
from rwkv_tune.model.wkv.registry import register_op

CHUNK_LEN = 16  # WKV_CHUNK in kernels/wkv_common.h: v7 saves a state every 16 steps
HEAD_SIZES = (32, 64)  # one thread per state row; 64 is what released models use
_SOURCES = {"wkv7": ("wkv7.cu", "wkv7_op.cpp"), "wkv6": ("wkv6.cu", "wkv6_op.cpp")}
_DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float32: "fp32"}
NVCC_FLAGS = ["-O3", "-Xptxas=-O3"]  # plus torch's own (COMMON_NVCC_FLAGS) and one -gencode


class KernelUnavailable(RuntimeError):
    """The CUDA kernels cannot be built or loaded here; the message says why and what to do."""


# ---------------------------------------------------------------------------------------------
# Building and loading


def cache_root() -> Path:
    """Where built kernels are kept: $XDG_CACHE_HOME/rwkv-tune/kernels (default ~/.cache/...)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rwkv-tune" / "kernels"


def build_name(kernel: str, head_size: int, dtype: torch.dtype, arch: str) -> str:
    """The library (and torch.ops namespace) name of one build, e.g. rwkv_tune_wkv7_n64_bf16_sm90."""
    return f"rwkv_tune_{kernel}_n{head_size}_{_DTYPE_NAMES[dtype]}_sm{arch}"


def kernel_defines(head_size: int, dtype: torch.dtype) -> list[str]:
    """The -D flags that select a build variant (see kernels/wkv_common.h)."""
    return [f"-DWKV_N={head_size}"] + (["-DWKV_FP32"] if dtype == torch.float32 else [])


def _kernels_dir() -> Path:
    from rwkv_tune.resources import kernels_dir

    return kernels_dir()


def _sources_digest() -> str:
    """A hash of every kernel source and header, so an upgrade never reuses a stale build."""
    h = hashlib.sha256()
    for path in sorted(_kernels_dir().iterdir()):
        if path.suffix in (".cu", ".cuh", ".cpp", ".h"):
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:10]


def build_dir(kernel: str, head_size: int, dtype: torch.dtype, arch: str) -> Path:
    """The cache folder of one build: per torch/CUDA version, kernel, head size, dtype, GPU arch, sources."""
    torch_tag = f"torch{torch.__version__.split('+')[0]}-cu{torch.version.cuda or 'none'}"
    return cache_root() / torch_tag / f"{build_name(kernel, head_size, dtype, arch)}-{_sources_digest()}"


def toolchain_problem() -> str | None:
    """Why the kernels cannot be compiled on this machine (None when nvcc, ninja and a CUDA torch are there)."""
    from torch.utils import cpp_extension

    if torch.version.cuda is None:
        return (f"this torch ({torch.__version__}) is a CPU-only build; install a CUDA build of torch "
                "to use op: cuda")
    home = cpp_extension.CUDA_HOME
    if home is None or not (Path(home) / "bin" / "nvcc").exists():
        return (f"nvcc (the CUDA compiler) was not found; install the CUDA toolkit {torch.version.cuda} "
                "and set CUDA_HOME, or use op: torch or op: fla")
    if not cpp_extension.is_ninja_available():
        return "ninja was not found; run `pip install ninja` (the kernels are built with it)"
    return None


_lock = threading.Lock()
_loaded: dict[str, str] = {}  # build name -> torch.ops namespace
_failed: dict[str, str] = {}  # build name -> why


def _arch(device: torch.device) -> str:
    major, minor = torch.cuda.get_device_capability(device)
    return f"{major}{minor}"


def load_kernel(kernel: str, head_size: int, dtype: torch.dtype, device: torch.device | str) -> str:
    """Build (once, cached on disk) and load one kernel variant; returns its torch.ops namespace."""
    device = torch.device(device)
    if dtype not in _DTYPE_NAMES:
        raise KernelUnavailable(f"no {kernel} kernel for {dtype}; the builds are bf16 and fp32")
    if head_size not in HEAD_SIZES:
        raise KernelUnavailable(f"no {kernel} kernel for head size {head_size} (built for {HEAD_SIZES})")
    if device.type != "cuda" or not torch.cuda.is_available():
        raise KernelUnavailable("no CUDA GPU is visible")
    arch = _arch(device)
    name = build_name(kernel, head_size, dtype, arch)
    with _lock:
        if name in _loaded:
            return _loaded[name]
        if name in _failed:
            raise KernelUnavailable(_failed[name])
        try:
            _loaded[name] = _build(kernel, head_size, dtype, arch)
        except KernelUnavailable as exc:
            _failed[name] = str(exc)
            raise
        return _loaded[name]


def _build(kernel: str, head_size: int, dtype: torch.dtype, arch: str) -> str:
    problem = toolchain_problem()
    if problem:
        raise KernelUnavailable(problem)
    from torch.utils.cpp_extension import load

    src = _kernels_dir()
    out = build_dir(kernel, head_size, dtype, arch)
    out.mkdir(parents=True, exist_ok=True)
    defines = kernel_defines(head_size, dtype)
    try:
        path = load(
            name=build_name(kernel, head_size, dtype, arch),
            sources=[str(src / f) for f in _SOURCES[kernel]],
            extra_include_paths=[str(src)],
            extra_cflags=["-O3", *defines],
            # An explicit -gencode makes torch skip its own arch list: one arch per build, named in the key.
            extra_cuda_cflags=[*NVCC_FLAGS, f"-gencode=arch=compute_{arch},code=sm_{arch}", *defines],
            build_directory=str(out),
            is_python_module=False,
            verbose=os.environ.get("RWKV_TUNE_VERBOSE_BUILD") == "1",
        )
    except Exception as exc:  # compiler errors come as RuntimeError/CalledProcessError/OSError
        raise KernelUnavailable(
            f"building the {kernel} kernel failed ({type(exc).__name__}: {str(exc).strip()[-400:]}); "
            f"the build files are in {out}; set RWKV_TUNE_VERBOSE_BUILD=1 for the full log"
        ) from exc
    return Path(path).stem  # torch appends _v1, _v2 ... when it rebuilds under the same name


def _lib(kernel: str, x: Tensor):
    return getattr(torch.ops, load_kernel(kernel, x.shape[-1], x.dtype, x.device))


# ---------------------------------------------------------------------------------------------
# Custom ops (real implementation = the built library; fake = shapes only)


@torch.library.custom_op("rwkv_tune::wkv7_forward", mutates_args=(), device_types="cuda")
def wkv7_forward_op(r: Tensor, g: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, s0: Tensor | None,
                    save: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """RWKV-7 kernel forward on [B, T, H, N] (T % 16 == 0): (y, final state, checkpoints, sa)."""
    return _lib("wkv7", r).forward(r, g, k, v, a, b, s0, save)


@wkv7_forward_op.register_fake
def _(r, g, k, v, a, b, s0, save):
    B, T, H, N = r.shape
    f32 = torch.float32
    ckpt = r.new_empty(B, H, T // CHUNK_LEN, N, N, dtype=f32) if save else r.new_empty(0, dtype=f32)
    sa = r.new_empty(B, T, H, N, dtype=f32) if save else r.new_empty(0, dtype=f32)
    return torch.empty_like(r), r.new_empty(B, H, N, N, dtype=f32), ckpt, sa


@torch.library.custom_op("rwkv_tune::wkv7_backward", mutates_args=(), device_types="cuda")
def wkv7_backward_op(r: Tensor, g: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, dy: Tensor,
                     dsT: Tensor | None, ckpt: Tensor, sa: Tensor
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """RWKV-7 kernel backward: (dr, dg, dk, dv, da, db, d initial state)."""
    return _lib("wkv7", r).backward(r, g, k, v, a, b, dy, dsT, ckpt, sa)


@wkv7_backward_op.register_fake
def _(r, g, k, v, a, b, dy, dsT, ckpt, sa):
    B, _, H, N = r.shape
    grads = [torch.empty_like(x) for x in (r, g, k, v, a, b)]
    return (*grads, r.new_empty(B, H, N, N, dtype=torch.float32))


@torch.library.custom_op("rwkv_tune::wkv6_forward", mutates_args=(), device_types="cuda")
def wkv6_forward_op(r: Tensor, g: Tensor, k: Tensor, v: Tensor, u: Tensor, s0: Tensor | None
                    ) -> tuple[Tensor, Tensor]:
    """RWKV-6/5 kernel forward on [B, T, H, N]: (y, final state)."""
    return _lib("wkv6", r).forward(r, g, k, v, u, s0)


@wkv6_forward_op.register_fake
def _(r, g, k, v, u, s0):
    B, _, H, N = r.shape
    return torch.empty_like(r), r.new_empty(B, H, N, N, dtype=torch.float32)


@torch.library.custom_op("rwkv_tune::wkv6_backward", mutates_args=(), device_types="cuda")
def wkv6_backward_op(r: Tensor, g: Tensor, k: Tensor, v: Tensor, u: Tensor, s0: Tensor | None, dy: Tensor,
                     dsT: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """RWKV-6/5 kernel backward: (dr, dg, dk, dv, du per batch element [B, H, N], d initial state)."""
    return _lib("wkv6", r).backward(r, g, k, v, u, s0, dy, dsT)


@wkv6_backward_op.register_fake
def _(r, g, k, v, u, s0, dy, dsT):
    B, _, H, N = r.shape
    f32 = torch.float32
    return (torch.empty_like(r), torch.empty_like(g), torch.empty_like(k), torch.empty_like(v),
            r.new_empty(B, H, N, dtype=f32), r.new_empty(B, H, N, N, dtype=f32))


# ---------------------------------------------------------------------------------------------
# Autograd


class Wkv7Function(torch.autograd.Function):
    """y, final_state = WKV7(r, g, k, v, a, b, s0) with the kernel's backward (T % 16 == 0)."""

    @staticmethod
    def forward(ctx, r, g, k, v, a, b, s0):
        ctx.set_materialize_grads(False)
        save = any(ctx.needs_input_grad)
        y, sT, ckpt, sa = torch.ops.rwkv_tune.wkv7_forward(r, g, k, v, a, b, s0, save)
        if save:
            ctx.save_for_backward(r, g, k, v, a, b, ckpt, sa)
        return y, sT

    @staticmethod
    def backward(ctx, dy, dsT):
        r, g, k, v, a, b, ckpt, sa = ctx.saved_tensors
        dy = torch.zeros_like(r) if dy is None else dy.to(r.dtype).contiguous()
        dsT = None if dsT is None else dsT.float().contiguous()
        dr, dg, dk, dv, da, db, ds0 = torch.ops.rwkv_tune.wkv7_backward(r, g, k, v, a, b, dy, dsT, ckpt, sa)
        return dr, dg, dk, dv, da, db, ds0 if ctx.needs_input_grad[6] else None


class Wkv6Function(torch.autograd.Function):
    """y, final_state = WKV6(r, g, k, v, u, s0) with the kernel's backward (any T)."""

    @staticmethod
    def forward(ctx, r, g, k, v, u, s0):
        ctx.set_materialize_grads(False)
        y, sT = torch.ops.rwkv_tune.wkv6_forward(r, g, k, v, u, s0)
        if any(ctx.needs_input_grad):
            ctx.save_for_backward(r, g, k, v, u, s0)
        return y, sT

    @staticmethod
    def backward(ctx, dy, dsT):
        r, g, k, v, u, s0 = ctx.saved_tensors
        dy = torch.zeros_like(r) if dy is None else dy.to(r.dtype).contiguous()
        dsT = None if dsT is None else dsT.float().contiguous()
        dr, dg, dk, dv, du, ds0 = torch.ops.rwkv_tune.wkv6_backward(r, g, k, v, u, s0, dy, dsT)
        return dr, dg, dk, dv, du.sum(0), ds0 if ctx.needs_input_grad[5] else None


# ---------------------------------------------------------------------------------------------
# The op functions registered as op="cuda"

_warned: set[str] = set()


def _warn_fallback(reason: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"CUDA WKV kernels not used: {reason}. Falling back to the torch op (slower).",
                      RuntimeWarning, stacklevel=3)


def _io_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.bfloat16 if dtype == torch.bfloat16 else torch.float32


def _why_not(kernel: str, r: Tensor) -> str | None:
    """None when the kernel can run on these inputs (building it if needed), else the reason."""
    if r.dtype == torch.float64:
        return "float64 inputs (the kernels are bf16/fp32)"
    if r.shape[-1] not in HEAD_SIZES:
        return f"head size {r.shape[-1]} (the kernels support {', '.join(map(str, HEAD_SIZES))})"
    if r.device.type == "meta":
        return None
    if r.device.type != "cuda":
        return f"the inputs are on {r.device.type}, not a CUDA GPU"
    try:
        load_kernel(kernel, r.shape[-1], _io_dtype(r.dtype), r.device)
    except KernelUnavailable as exc:
        return str(exc)
    return None


def wkv7_cuda(r: Tensor, log_decay: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor,
              state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """RWKV-7 WKV with the CUDA kernel; same contract as `naive.wkv7_naive` (state [B, H, N_value, N_key])."""
    reason = _why_not("wkv7", r)
    if reason is not None:
        _warn_fallback(reason)
        return wkv7_chunked(r, log_decay, k, v, a, b, state)
    return _wkv7_apply(r, log_decay, k, v, a, b, state)


def _wkv7_apply(r: Tensor, log_decay: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor,
                state: Tensor | None) -> tuple[Tensor, Tensor]:
    T = r.shape[1]
    io = _io_dtype(r.dtype)
    pad = -T % CHUNK_LEN  # padded steps (g = 0, zero vectors) leave the state unchanged

    def prep(x: Tensor, dtype: torch.dtype) -> Tensor:
        x = x.to(dtype)
        return (F.pad(x, (0, 0, 0, 0, 0, pad)) if pad else x).contiguous()

    s0 = None if state is None else state.float().contiguous()
    y, sT = Wkv7Function.apply(prep(r, io), prep(log_decay, torch.float32), prep(k, io), prep(v, io),
                               prep(a, io), prep(b, io), s0)
    return y[:, :T].to(r.dtype), sT


def wkv6_cuda(r: Tensor, log_decay: Tensor, k: Tensor, v: Tensor, u: Tensor,
              state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """RWKV-6/5 WKV with the CUDA kernel; same contract as `naive.wkv6_naive` (state [B, H, N_key, N_value])."""
    reason = _why_not("wkv6", r)
    if reason is not None:
        _warn_fallback(reason)
        return wkv6_chunked(r, log_decay, k, v, u, state)
    return _wkv6_apply(r, log_decay, k, v, u, state)


def _wkv6_apply(r: Tensor, log_decay: Tensor, k: Tensor, v: Tensor, u: Tensor,
                state: Tensor | None) -> tuple[Tensor, Tensor]:
    io = _io_dtype(r.dtype)
    s0 = None if state is None else state.float().contiguous()
    y, sT = Wkv6Function.apply(r.to(io).contiguous(), log_decay.float().contiguous(), k.to(io).contiguous(),
                               v.to(io).contiguous(), u.float().contiguous(), s0)
    return y.to(r.dtype), sT


def status() -> tuple[bool, str]:
    """(usable, detail) for `rwkv-tune doctor`: can op "cuda" run here? Builds nothing."""
    if not torch.cuda.is_available():
        return False, "no CUDA GPU visible (op: cuda falls back to torch)"
    problem = toolchain_problem()
    if problem:
        return False, problem
    return True, f"kernels build on first use into {cache_root()}"


def register() -> bool:
    """Make op="cuda" available when a CUDA GPU is visible; returns whether it registered."""
    if not torch.cuda.is_available():
        return False
    register_op("cuda", wkv7=wkv7_cuda, wkv6=wkv6_cuda)
    return True


__all__ = ["KernelUnavailable", "build_dir", "cache_root", "load_kernel", "register", "status",
           "toolchain_problem", "wkv6_cuda", "wkv7_cuda"]
