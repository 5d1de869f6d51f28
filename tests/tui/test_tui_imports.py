"""The dashboard, `watch` and the plain printer never load torch (checked in fresh processes)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

HEAVY = ("torch", "deepspeed", "bitsandbytes")


def loaded_after(code: str, watch: tuple[str, ...]) -> list[str]:
    """Which of `watch` are in sys.modules after running `code` in a fresh interpreter."""
    report = f"\nimport json, sys\nprint(json.dumps([m for m in {watch!r} if m in sys.modules]))\n"
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code) + report],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_the_dashboard_loads_textual_but_no_torch():
    # textual showing up proves the probe sees what an import loads.
    assert loaded_after("import rwkv_tune.tui.app", (*HEAVY, "textual")) == ["textual"]


def test_watch_and_the_printer_load_neither_torch_nor_textual():
    assert loaded_after("import rwkv_tune.cli.watch, rwkv_tune.progress", (*HEAVY, "textual")) == []


def test_running_the_dashboard_and_merging_loads_no_torch(tmp_path):
    code = f"""
    import asyncio
    import sys
    sys.path.insert(0, {str(Path(__file__).parent)!r})
    from rwkv_tune.tui.app import DashboardApp
    from scripted_run import ScriptedRun

    run = ScriptedRun({str(tmp_path / "run")!r})
    run.start(); run.steps(20); run.eval(); run.warning("w"); run.done()

    async def main():
        app = DashboardApp(run.root, follow=False, merge=lambda request, progress: {{"path": request.out}})
        async with app.run_test() as pilot:
            await app.workers.wait_for_complete()
            await pilot.press("m")
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert app.state.merge.status == "done", app.state.merge

    asyncio.run(main())
    """
    assert loaded_after(code, HEAVY) == []
