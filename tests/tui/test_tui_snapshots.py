"""SVG snapshots of the dashboard (pytest-textual-snapshot); refresh with `pytest --snapshot-update`.

The scripted run has fixed times and seeded values, so the pictures are deterministic.
"""

from __future__ import annotations

from scripted_run import ScriptedRun

from rwkv_tune.tui.app import DashboardApp


def mid_run(root) -> ScriptedRun:
    run = ScriptedRun(root)
    run.start()
    for _ in range(3):
        run.steps(50)
        run.eval()
        run.checkpoint()
    run.sample()
    run.warning("loss rose 3 steps in a row")
    return run


async def loaded(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_mid_run(snap_compare, tmp_path):
    run = mid_run(tmp_path / "run")
    assert snap_compare(DashboardApp(run.root, follow=False), terminal_size=(110, 32), run_before=loaded)


def test_done_at_80x24(snap_compare, tmp_path):
    run = mid_run(tmp_path / "run")
    run.steps(250)
    run.eval()
    run.checkpoint()
    run.done()
    assert snap_compare(DashboardApp(run.root, follow=False), terminal_size=(80, 24), run_before=loaded)


def test_quit_dialog(snap_compare, tmp_path):
    run = mid_run(tmp_path / "run")

    async def quit_pressed(pilot) -> None:
        await loaded(pilot)
        await pilot.press("q")

    assert snap_compare(DashboardApp(run.root, follow=False), terminal_size=(80, 24), run_before=quit_pressed)
