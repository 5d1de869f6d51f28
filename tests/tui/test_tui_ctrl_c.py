"""Ctrl-C in the dashboard stops and saves (as q → s does), instead of Textual's "press ctrl+q" toast."""

from __future__ import annotations

from textual.widgets import Static

from rwkv_tune.tui.app import DashboardApp
from rwkv_tune.tui.screens import QuitScreen


def control_word(run) -> str | None:
    path = run.root / "control"
    return path.read_text() if path.exists() else None


def test_ctrl_c_stops_and_saves_then_returns_when_the_trainer_ends(scripted, drive, wait_until):
    scripted.start()
    scripted.steps(5)
    app = DashboardApp(scripted.root, poll_s=0.02)

    async def scenario(pilot):
        await wait_until(pilot, lambda: app.state.step == 5)
        await pilot.press("ctrl+c")
        assert control_word(scripted) == "stop"
        assert str(app.dashboard.query_one("#badge", Static).render()).strip() == "STOPPING"
        assert not any("ctrl+q" in n.message for n in app._notifications)
        assert app.is_running  # it waits for the trainer's checkpoint and done
        scripted.steps(1)
        scripted.checkpoint()
        scripted.done(reason="stopped")
        await wait_until(pilot, lambda: not app.is_running)

    assert drive(app, scenario) == "stopped"


def test_ctrl_c_in_the_quit_dialog_stops_too(scripted, drive, wait_until):
    scripted.start()
    scripted.steps(3)
    app = DashboardApp(scripted.root, poll_s=0.02)

    async def scenario(pilot):
        await wait_until(pilot, lambda: app.state.step == 3)
        await pilot.press("q")
        assert isinstance(app.screen, QuitScreen)
        await pilot.press("ctrl+c")
        assert not isinstance(app.screen, QuitScreen) and control_word(scripted) == "stop"
        scripted.done(reason="stopped")
        await wait_until(pilot, lambda: not app.is_running)

    assert drive(app, scenario) == "stopped"


def test_ctrl_c_on_a_finished_run_quits(scripted, drive, wait_until):
    scripted.start()
    scripted.steps(4)
    scripted.done()
    app = DashboardApp(scripted.root, poll_s=0.02, follow=False)

    async def scenario(pilot):
        await wait_until(pilot, lambda: app.state.finished)
        await pilot.press("ctrl+c")
        await wait_until(pilot, lambda: not app.is_running)

    assert drive(app, scenario) == "quit"
    assert control_word(scripted) is None
