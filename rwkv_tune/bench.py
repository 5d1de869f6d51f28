"""Forward+backward speed and peak memory of RWKV-7 shapes, per WKV op (what `rwkv-tune bench` runs).

Two kinds of rows: "model" times one training step without the optimizer (embedding, all blocks,
chunked cross-entropy, backward of every parameter) for a 0.1B/0.4B/1.5B-shaped model with random
weights; "wkv" times the WKV op alone (one layer's worth: B x T x H x 64) forward and backward.
Benchmarks print numbers; they are never tests.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from rwkv_tune.spec import ModelSpec

# size name -> (n_layer, n_embd, vocab); "tiny" is for CPUs and smoke tests
SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (2, 128, 1024),
    "0.1B": (12, 768, 65536),
    "0.4B": (24, 1024, 65536),
    "1.5B": (24, 2048, 65536),
}
GPU_SIZES = ("0.1B", "0.4B", "1.5B")
GPU_CTX = (1024, 4096)
CPU_SIZES = ("tiny",)
CPU_CTX = (64,)
HEAD_SIZE = 64


@dataclass
class BenchResult:
    """One measured configuration; `error` is set (and the numbers are None) when it could not run."""

    kind: str
    size: str
    op: str
    ctx: int
    batch: int
    dtype: str
    device: str
    step_ms: float | None = None
    tokens_per_s: float | None = None
    peak_mem_mib: float | None = None
    mem_kind: str = ""
    speedup_vs_torch: float | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def model_spec(size: str) -> ModelSpec:
    """A v7 ModelSpec with the released models' shapes (RWKV-LM's LoRA-dim formulas)."""
    from rwkv_tune.testing import default_dim_ffn, default_lora_dims

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
    n_layer, n_embd, vocab = SIZES[size]
    return ModelSpec(version=7, n_layer=n_layer, n_embd=n_embd, n_head=n_embd // HEAD_SIZE, head_size=HEAD_SIZE,
                     vocab_size=vocab, dim_ffn=default_dim_ffn(7, n_embd), lora_dims=default_lora_dims(7, n_embd),
                     layer0_v=False)


def available_ops(device: torch.device) -> list[str]:
    """The WKV ops that can run on `device` (registers cuda/fla when a GPU is there); never "naive"."""
    from rwkv_tune.model.wkv import WKV7_OPS, load_op

    if device.type == "cuda":
        load_op("cuda")
        load_op("fla")
    return [op for op in ("torch", "cuda", "fla") if op in WKV7_OPS]


def _init_weights(model: torch.nn.Module, device: torch.device, seed: int) -> None:
    """Random weights of a sane scale (timing does not depend on them, but NaNs could)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("ln0.weight", "ln1.weight", "ln2.weight", "ln_out.weight", "ln_x.weight")):
                p.fill_(1.0)
            elif p.ndim == 1:
                p.zero_()
            else:
                p.normal_(0.0, 0.02 if p.ndim == 2 else 0.3, generator=gen)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step: Callable[[], None], device: torch.device, steps: int, warmup: int) -> tuple[float, float | None]:
    """Median seconds per step, and peak CUDA memory (MiB) over the timed steps."""
    for _ in range(warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return sorted(times)[len(times) // 2], peak


def _process_peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def bench_model(size: str, op: str, ctx: int, *, batch: int, steps: int, warmup: int, device: torch.device,
                dtype: torch.dtype, grad_cp: bool = False, seed: int = 0) -> BenchResult:
    """One forward+backward training step of a `size`-shaped v7 model with `op`, at `ctx` tokens per row."""
    from rwkv_tune.model import build_model
    from rwkv_tune.model.loss import chunked_cross_entropy

    spec = model_spec(size)
    with torch.device("meta"):
        model = build_model(spec, op=op)
    model = model.to_empty(device=device).to(dtype)
    _init_weights(model, device, seed)
    model.train()
    model.grad_cp = grad_cp
    gen = torch.Generator(device="cpu").manual_seed(seed)
    idx = torch.randint(0, spec.vocab_size, (batch, ctx + 1), generator=gen).to(device)

    def step() -> None:
        hidden, _ = model.hidden(idx[:, :-1])
        loss = chunked_cross_entropy(hidden, model.head.weight, idx[:, 1:])
        loss.backward()
        model.zero_grad(set_to_none=True)

    seconds, peak = _timed(step, device, steps, warmup)
    return _result("model", size, op, ctx, batch, dtype, device, seconds, peak)


def bench_wkv(size: str, op: str, ctx: int, *, batch: int, steps: int, warmup: int, device: torch.device,
              dtype: torch.dtype, seed: int = 0) -> BenchResult:
    """The WKV7 op alone, forward and backward, on one layer of a `size` model: [batch, ctx, H, 64]."""
    from rwkv_tune.model.wkv import wkv7

    H = SIZES[size][1] // HEAD_SIZE
    gen = torch.Generator(device="cpu").manual_seed(seed)
    shape = (batch, ctx, H, HEAD_SIZE)
    r, k, v = (torch.randn(shape, generator=gen).mul(0.5) for _ in range(3))
    g = -0.6065306597126334 * torch.sigmoid(torch.randn(shape, generator=gen) * 2)
    kk = torch.nn.functional.normalize(torch.randn(shape, generator=gen), dim=-1)
    a, b = -kk, kk * torch.rand(shape, generator=gen)
    inputs = [x.to(device=device, dtype=dtype if x is not g else torch.float32).requires_grad_()
              for x in (r, g, k, v, a, b)]
    dy = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)

    def step() -> None:
        y, _ = wkv7(*inputs, op=op)
        y.backward(dy)
        for x in inputs:
            x.grad = None

    seconds, peak = _timed(step, device, steps, warmup)
    return _result("wkv", size, op, ctx, batch, dtype, device, seconds, peak)


def _result(kind: str, size: str, op: str, ctx: int, batch: int, dtype: torch.dtype, device: torch.device,
            seconds: float, peak: float | None) -> BenchResult:
    return BenchResult(kind=kind, size=size, op=op, ctx=ctx, batch=batch, dtype=str(dtype).removeprefix("torch."),
                       device=str(device), step_ms=seconds * 1e3, tokens_per_s=batch * ctx / seconds,
                       peak_mem_mib=peak if peak is not None else _process_peak_rss_mib(),
                       mem_kind="cuda-max-allocated" if peak is not None else "process-peak-rss")


def run(sizes: Sequence[str], ctxs: Sequence[int], ops: Sequence[str], *, kinds: Sequence[str] = ("model", "wkv"),
        batch: int = 1, steps: int = 3, warmup: int = 1, device: str | torch.device | None = None,
        dtype: torch.dtype | None = None, grad_cp: bool = False,
        progress: Callable[[BenchResult], None] | None = None) -> list[BenchResult]:
    """Every (kind, size, ctx, op) combination; out-of-memory and op failures become rows with `error`."""
    from rwkv_tune.model.wkv import op_problem

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    for size in sizes:
        model_spec(size)
    results = []
    for kind in kinds:
        fn = bench_model if kind == "model" else bench_wkv
        extra = {"grad_cp": grad_cp} if kind == "model" else {}
        for size in sizes:
            for ctx in ctxs:
                for op in ops:
                    problem = op_problem(op, device, head_size=HEAD_SIZE, dtype=dtype)
                    try:
                        if problem:  # never time a fallback under this op's name
                            raise RuntimeError(problem)
                        res = fn(size, op, ctx, batch=batch, steps=steps, warmup=warmup, device=device,
                                 dtype=dtype, **extra)
                    except torch.OutOfMemoryError:
                        res = BenchResult(kind, size, op, ctx, batch, str(dtype).removeprefix("torch."),
                                          str(device), error="out of memory")
                    except (RuntimeError, ValueError) as exc:
                        why = f"unavailable: {problem}" if problem else f"{type(exc).__name__}: {str(exc)[:300]}"
                        res = BenchResult(kind, size, op, ctx, batch, str(dtype).removeprefix("torch."),
                                          str(device), error=why)
                    finally:
                        if device.type == "cuda":
                            torch.cuda.empty_cache()
                    results.append(res)
                    if progress:
                        progress(res)
    _add_speedups(results)
    return results


def _add_speedups(results: list[BenchResult]) -> None:
    base = {(r.kind, r.size, r.ctx): r.step_ms for r in results if r.op == "torch" and r.step_ms}
    for r in results:
        ref = base.get((r.kind, r.size, r.ctx))
        if ref and r.step_ms:
            r.speedup_vs_torch = ref / r.step_ms


__all__ = ["SIZES", "BenchResult", "available_ops", "bench_model", "bench_wkv", "model_spec", "run"]
