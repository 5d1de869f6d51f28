"""Merging from the dashboard: what to merge, and the default runner (a child process, so no torch here)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rwkv_tune.tui.state import RunState

MERGE_MODULE = "rwkv_tune.merge"

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class MergeRequest:
    """What to merge: the run's base model and adapter, and where the merged model goes."""

    run_dir: Path
    base: str | None
    adapter: str
    out: str
    dtype: str | None = None


MergeRunner = Callable[[MergeRequest, ProgressFn], "dict[str, Any] | None"]


class MergeUnavailable(RuntimeError):
    """Merging cannot start: no merge module in this install, or no base model or adapter to merge."""


def subprocess_merge(request: MergeRequest, progress: ProgressFn) -> dict[str, Any]:
    """Merge in a child process (`rwkv_tune.tui.merge_child`), relaying its per-tensor progress."""
    if importlib.util.find_spec(MERGE_MODULE) is None:
        raise MergeUnavailable("merging is not available in this install (no rwkv_tune.merge); "
                               "the adapter is saved, merge it later with `rwkv-tune merge`")
    if not request.base:
        raise MergeUnavailable("the run's preset names no base model (model.path); use `rwkv-tune merge --base`")
    for what, path in (("base model", request.base), ("adapter", request.adapter)):
        if not Path(path).exists():
            raise MergeUnavailable(f"the {what} {path} does not exist (seen from {Path.cwd()}); "
                                   "use `rwkv-tune merge --base ... --adapter ...`")
    args = {"base": request.base, "adapter": request.adapter, "out": request.out, "dtype": request.dtype}
    report: Any = None
    error: str | None = None
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "rwkv_tune.tui.merge_child", json.dumps(args)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "done" in message:
                progress(int(message["done"]), int(message["total"]))
            report = message.get("report", report)
            error = message.get("error", error)
        code = proc.wait()
        stderr.seek(0)
        tail = stderr.read().strip().splitlines()
    if error or code != 0 or not isinstance(report, dict):
        raise RuntimeError(error or (tail[-1] if tail else f"the merge process exited with code {code}"))
    return result_from_report(report, request.out)


def result_from_report(report: dict[str, Any], out: str) -> dict[str, Any]:
    """A merge report (rwkv_tune.merge's shape) as the dashboard's result: {path, verified, report}."""
    verification = report.get("verification") or {}
    return {"path": (report.get("out") or {}).get("path", out),
            "verified": True if verification.get("checked") else None, "report": report}


def read_merge_report(run_dir: Path, *, newer_than: float | None = None) -> dict[str, Any] | None:
    """The run's merge-report.json, if there is a readable one (written at or after `newer_than`)."""
    path = Path(run_dir) / "merge-report.json"
    try:
        if newer_than is not None and path.stat().st_mtime < newer_than:
            return None
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


def adopt_merge_report(state: RunState, run_dir: Path) -> None:
    """Show the run's merged model whoever merged it (the trainer or `rwkv-tune merge`), and say when it is
    stale or from a run that stopped early."""
    from rwkv_tune.run_merges import merge_notice, read_report
    from rwkv_tune.runs import RunDir

    merged = Path(state.merge.path) if state.merge.path else RunDir(Path(run_dir)).merged
    if not merged.exists():
        return
    report = read_report(merged)
    if state.merge.status == "idle" and report is not None:
        state.finish_merge(result_from_report(report, str(merged)))
    state.merge.notice = merge_notice(merged, report) or ""
