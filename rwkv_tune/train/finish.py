"""After training: merge the run's adapter into the base model and verify it; export GGUF if asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rwkv_tune.preset import Preset
from rwkv_tune.runs import RunDir

GGUF_DTYPES = {None: "f16", "fp16": "f16", "bf16": "bf16", "fp32": "f32"}  # output.merge_dtype → GGUF dtype


def merge_run(preset: Preset, *, console: Any = None) -> Any:
    """Merge <run>/adapter.safetensors into the base → <run>/merged.pth (+ merge-report.json);
    with `output.export: gguf`, also write <run>/merged.gguf from it."""
    from rwkv_tune.merge import merge

    run = RunDir(Path(preset.output.dir))
    report = merge(preset.model.path, run.adapter, run.merged, dtype=preset.output.merge_dtype)
    if console is not None:
        console.print(f"[green]merged[/] {run.merged}")
    if preset.output.export == "gguf":
        export_run_gguf(run, GGUF_DTYPES[preset.output.merge_dtype], console=console)
    return report


def export_run_gguf(run: RunDir, dtype: str, *, console: Any = None) -> Any:
    """<run>/merged.pth → <run>/merged.gguf for llama.cpp."""
    from rwkv_tune.export import export_gguf

    report = export_gguf(run.merged, run.merged.with_suffix(".gguf"), dtype=dtype)
    if console is not None:
        console.print(f"[green]exported[/] {report.path} ({report.arch}, {dtype}); run it: {report.run_command}",
                      markup=True, soft_wrap=True)
    return report
