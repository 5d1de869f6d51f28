"""Where a merged model came from (which run, which step) and whether it is still the run's latest.

`merge` records `adapter_origin(adapter)` in merge-report.json as `source`; `merge`, `watch` and
`generate` turn it into one line with `merge_notice`: a merged model older than the run's latest
adapter, or one merged from a run that stopped early. Torch-free.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rwkv_tune.runs import RunDir, read_events

EARLY_ENDS = ("stopped", "interrupted", "diverged")


def _step_of(checkpoint: Path) -> int | None:
    try:
        return int(checkpoint.name.removeprefix("step-"))
    except ValueError:
        return None


def latest_step(run: RunDir) -> int | None:
    """The step of the run's latest complete checkpoint (its adapter.safetensors is that one's copy)."""
    latest = run.latest_checkpoint()
    return _step_of(latest) if latest is not None else None


def run_progress(run: RunDir) -> dict[str, Any]:
    """{total_steps, reason} of the run's last session (reason None while it runs or after a crash)."""
    total, reason = None, None
    for event in read_events(run.metrics):
        if event.get("event") == "run_start":
            total, reason = (event.get("plan") or {}).get("total_steps"), None
        elif event.get("event") == "done":
            reason = event.get("reason")
    return {"total_steps": total, "reason": reason}


def adapter_origin(adapter: str | Path) -> dict[str, Any] | None:
    """{run, step, total_steps, reason} for an adapter of one of our runs (the run's adapter or a
    checkpoint's), None for any other file."""
    path = Path(adapter).resolve()
    if path.parent.parent.name == "checkpoints" and path.parent.name.startswith("step-"):
        run, step = RunDir(path.parents[2]), _step_of(path.parent)
    elif path.name == "adapter.safetensors" and RunDir(path.parent).metrics.exists():
        run = RunDir(path.parent)
        step = latest_step(run)
    else:
        return None
    if not run.metrics.exists():
        return None
    return {"run": str(run.root), "step": step, **run_progress(run)}


def read_report(merged: Path) -> dict[str, Any] | None:
    """The merge-report.json beside a merged model, if it is that model's report."""
    path = merged.with_name("merge-report.json")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict):
        return None
    out = (report.get("out") or {}).get("path")
    if out and Path(out).resolve() != merged.resolve():
        return None
    return report


def merge_notice(merged: str | Path, report: dict[str, Any] | None = None) -> str | None:
    """One line when a merged model is not the run's latest or comes from a run that stopped early."""
    merged = Path(merged)
    report = report if report is not None else read_report(merged)
    source = (report or {}).get("source")
    if not source:
        return _older_than_adapter(merged)
    run = RunDir(Path(source["run"]))
    step = source.get("step")
    now_latest = latest_step(run)
    if step is not None and now_latest is not None and now_latest > step:
        return (f"{merged.name} is stale: merged from step {step}, the run's latest adapter is step {now_latest}; "
                f"merge again: rwkv-tune merge {run.root}")
    progress = run_progress(run)
    total = progress["total_steps"] or source.get("total_steps")
    if step is not None and total and step < total:
        if progress["reason"] in EARLY_ENDS:
            return f"merged from step {step} of {total} — the run {progress['reason']} early"
        if progress["reason"] is None:
            return f"merged from step {step} of {total} — the run has not finished"
    return None


def _older_than_adapter(merged: Path) -> str | None:
    """For a merge that recorded no source: a run's merged.pth older than the run's adapter is stale."""
    run = RunDir(merged.parent)
    try:
        if merged.name == run.merged.name and run.adapter.stat().st_mtime > merged.stat().st_mtime:
            return (f"{merged.name} is older than the run's latest adapter; merge again: "
                    f"rwkv-tune merge {run.root}")
    except OSError:
        pass
    return None
