"""After training: merge the run's adapter into the base model and verify it."""

from __future__ import annotations

from typing import Any

from rwkv_tune.preset import Preset
from rwkv_tune.runs import RunDir


def merge_run(preset: Preset, *, console: Any = None) -> Any:
    """Merge <run>/adapter.safetensors into the base → <run>/merged.pth (+ merge-report.json)."""
    from rwkv_tune.merge import merge

    run = RunDir(__import__("pathlib").Path(preset.output.dir))
    report = merge(preset.model.path, run.adapter, run.merged, dtype=preset.output.merge_dtype)
    if console is not None:
        console.print(f"[green]merged[/] {run.merged}")
    return report
