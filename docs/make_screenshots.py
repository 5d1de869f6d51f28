"""Export SVG screenshots of the dashboard (mid-run and done) from a scripted run, for the README.

    python docs/make_screenshots.py    # writes docs/screenshots/dashboard-{running,done,merge}.svg
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from rwkv_tune.tui.app import DashboardApp
from rwkv_tune.tui.screens import MergeScreen

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "tui"))  # the scripted run is a test fixture
from scripted_run import ScriptedRun  # noqa: E402

OUT = Path(__file__).resolve().parent / "screenshots"
SIZE = (120, 34)


def scripted_run(root: Path, *, finished: bool) -> ScriptedRun:
    """A 400-step LoRA run with evals, checkpoints and a sample; finished and merged if asked."""
    run = ScriptedRun(root, merge=finished)
    run.start()
    for _ in range(3):
        run.steps(50)
        run.eval()
        run.checkpoint()
    run.sample(prompt="User: Where does the river go?\n\nAssistant:",
               text=" Down past the mill and the old bridge, and on to the sea.")
    run.warning("grad norm above 5 at step 131 (clipped to 1.0)")
    if finished:
        run.steps(250)
        run.eval()
        run.checkpoint()
        for done in range(0, 341, 20):
            run.emit("merge_progress", done=done, total=340)
        run.emit("merge_done", path="runs/demo/merged.pth", verified=True,
                 report={"verification": {"checked": True, "tokens": 16, "max_abs_diff": 3.1e-06,
                                          "tolerance": 1e-04}})
        run.done(merged="runs/demo/merged.pth")
    return run


async def shoot(root: Path, *, finished: bool) -> list[Path]:
    """Screenshots of one scripted run: the dashboard, and the merge dialog when it finished."""
    run = scripted_run(root, finished=finished)
    app = DashboardApp(run.root, follow=False)
    shots = []
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        name = "dashboard-done.svg" if finished else "dashboard-running.svg"
        shots.append(Path(app.save_screenshot(name, str(OUT))))
        if finished:
            await pilot.press("m")  # the run is merged: m shows the merge result
            assert isinstance(app.screen, MergeScreen)
            shots.append(Path(app.save_screenshot("dashboard-merge.svg", str(OUT))))
    return shots


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for finished in (False, True):
            for path in asyncio.run(shoot(Path(tmp) / str(finished), finished=finished)):
                print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
