"""`rwkv-tune bench`: forward+backward tokens/s and peak memory per WKV op and model shape."""

from __future__ import annotations

from typing import Optional

import typer

from rwkv_tune.cli._common import console, print_json, user_errors
from rwkv_tune.errors import ConfigError


def bench(
    size: Optional[list[str]] = typer.Option(  # noqa: UP045 - Typer needs Optional for list options
        None, "--size", help="Model shape: tiny, 0.1B, 0.4B, 1.5B (repeatable). Default: 0.1B 0.4B 1.5B on a GPU, tiny on CPU."),
    ctx: Optional[list[int]] = typer.Option(  # noqa: UP045
        None, "--ctx", help="Tokens per sequence (repeatable). Default: 1024 4096 on a GPU, 64 on CPU."),
    op: Optional[list[str]] = typer.Option(  # noqa: UP045
        None, "--op", help="WKV op (repeatable): torch, cuda, fla, naive. Default: every op usable here but naive."),
    what: str = typer.Option("all", "--what", help="model (a full training step), wkv (the op alone) or all."),
    batch: int = typer.Option(1, "--batch", min=1, help="Sequences per step."),
    steps: int = typer.Option(3, "--steps", min=1, help="Timed steps (the median is reported)."),
    warmup: int = typer.Option(1, "--warmup", min=0, help="Untimed steps first (kernel builds, autotuning)."),
    device: Optional[str] = typer.Option(None, "--device", help="cuda, cuda:1, cpu. Default: cuda when available."),  # noqa: UP045
    dtype: Optional[str] = typer.Option(None, "--dtype", help="bf16 or fp32. Default: bf16 on a GPU, fp32 on CPU."),  # noqa: UP045
    grad_cp: bool = typer.Option(False, "--grad-cp", help="Gradient checkpointing per block (model rows)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Measure forward+backward tokens/s and peak memory of RWKV-7 shapes for each WKV op."""
    import torch

    from rwkv_tune.bench import CPU_CTX, CPU_SIZES, GPU_CTX, GPU_SIZES, SIZES, available_ops, run

    with user_errors():
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"--device {device} but no CUDA GPU is visible", "Use --device cpu --size tiny.")
        dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32}
        if dtype is not None and dtype not in dtypes:
            raise ConfigError(f"--dtype {dtype} is not one of bf16, fp32", "Use --dtype bf16.")
        kinds = {"all": ("model", "wkv"), "model": ("model",), "wkv": ("wkv",)}
        if what not in kinds:
            raise ConfigError(f"--what {what} is not one of model, wkv, all", "Use --what all.")
        sizes = size or list(GPU_SIZES if dev.type == "cuda" else CPU_SIZES)
        unknown = [s for s in sizes if s not in SIZES]
        if unknown:
            raise ConfigError(f"--size {unknown[0]} is not one of {', '.join(SIZES)}", "Use e.g. --size 0.4B.")
        ctxs = ctx or list(GPU_CTX if dev.type == "cuda" else CPU_CTX)
        usable = available_ops(dev)
        ops = op or usable
        missing = [o for o in ops if o not in usable and o != "naive"]
        if missing:
            raise ConfigError(f"--op {missing[0]} cannot run here (usable: {', '.join(usable)})",
                              "Run `rwkv-tune doctor` to see what is missing.")

        def progress(res) -> None:
            if not as_json:
                console.print(f"  {res.kind:5} {res.size:5} ctx {res.ctx:5} {res.op:6} "
                              + (f"{res.tokens_per_s:10.0f} tok/s" if res.error is None else res.error))

        results = run(sizes, ctxs, ops, kinds=kinds[what], batch=batch, steps=steps, warmup=warmup, device=dev,
                      dtype=dtypes[dtype] if dtype else None, grad_cp=grad_cp, progress=progress)

    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
    if as_json:
        print_json({"device": str(dev), "gpu": gpu, "torch": torch.__version__,
                    "results": [r.to_dict() for r in results]})
        return
    _print_table(results, gpu or "CPU")


def _print_table(results, device_name: str) -> None:
    from rich.table import Table

    table = Table(title=f"rwkv-tune bench ({device_name})", title_justify="left")
    for col in ("kind", "size", "ctx", "op", "dtype", "ms/step", "tokens/s", "× torch", "peak MiB"):
        table.add_column(col, justify="right" if col not in ("kind", "size", "op", "dtype") else "left")
    for r in results:
        if r.error:
            table.add_row(r.kind, r.size, str(r.ctx), r.op, r.dtype, "", "", "", r.error)
            continue
        table.add_row(r.kind, r.size, str(r.ctx), r.op, r.dtype, f"{r.step_ms:.1f}", f"{r.tokens_per_s:,.0f}",
                      f"{r.speedup_vs_torch:.2f}" if r.speedup_vs_torch else "", f"{r.peak_mem_mib:,.0f}")
    console.print(table)
    if any(r.mem_kind == "process-peak-rss" for r in results):
        console.print("peak MiB on CPU is the whole process's peak resident memory so far")
