"""The dashboard driven by a scripted metrics.jsonl with Textual's pilot, asserting on widget state."""

from __future__ import annotations

from textual.widgets import ProgressBar, Static

from rwkv_tune.tui import merging
from rwkv_tune.tui.app import DashboardApp
from rwkv_tune.tui.merging import MergeRequest, MergeUnavailable
from rwkv_tune.tui.screens import MergeScreen, QuitScreen
from rwkv_tune.tui.widgets import EventLog, LossChart


def text_of(screen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


def control_word(run) -> str | None:
    path = run.root / "control"
    return path.read_text() if path.exists() else None


def make_app(run, **kwargs) -> DashboardApp:
    return DashboardApp(run.root, poll_s=0.02, **kwargs)


def test_progress_loss_eta_warnings_and_done_follow_the_file(scripted, drive, wait_until):
    app = make_app(scripted)

    async def scenario(pilot):
        screen = app.dashboard
        assert "waiting for" in text_of(screen, "#status-line")
        scripted.start()
        scripted.steps(10)
        await wait_until(pilot, lambda: app.state.step == 10)
        bar = screen.query_one("#progress-bar", ProgressBar)
        assert (bar.progress, bar.total) == (10, 400)
        assert "x070 0.1B L12 D768 · lora r32 α32 · quant none" in text_of(screen, "#header-text")
        assert "presets/demo.yaml" in text_of(screen, "#header-text")
        assert screen.query_one(LossChart).points == 10
        assert text_of(screen, "#progress-head") == "step 10/400 · ETA 26m 00s"

        scripted.steps(40)
        scripted.eval()
        scripted.warning("loss spiked to 9.1 at step 48")
        await wait_until(pilot, lambda: app.state.warnings == 1)
        assert screen.query_one(LossChart).points == 50 and len(app.state.evals) == 1
        assert text_of(screen, "#progress-head") == "step 50/400 · ETA 23m 20s"
        assert "epoch 1/4" in text_of(screen, "#progress-detail")
        assert "loss spiked" in text_of(screen, "#status-line")
        log = screen.query_one(EventLog)
        assert any("loss spiked" in line.text for line in log.lines)
        assert "1 warn" in text_of(screen, "#stats")

        scripted.steps(350)
        scripted.checkpoint()
        scripted.done()
        await wait_until(pilot, lambda: app.state.finished)
        assert text_of(screen, "#badge").strip() == "DONE"
        assert "m merges" in text_of(screen, "#status-line")
        assert text_of(screen, "#progress-head") == "step 400/400 · finished"
        assert "step-00000400" in text_of(screen, "#checkpoints")

    drive(app, scenario)


def test_keys_write_control_words(scripted, drive, wait_until):
    scripted.start()
    scripted.steps(5)
    app = make_app(scripted)

    async def scenario(pilot):
        await wait_until(pilot, lambda: app.state.step == 5)
        screen = app.dashboard
        await pilot.press("p")
        assert control_word(scripted) == "pause"
        assert text_of(screen, "#badge").strip() == "PAUSED"
        assert "p resumes" in text_of(screen, "#status-line")
        shown = {b.binding.action for b in screen.active_bindings.values()}
        assert "resume" in shown
        await pilot.press("p")
        assert control_word(scripted) == "resume"
        await pilot.press("s")
        assert control_word(scripted) == "save"
        assert not list(scripted.root.glob(".control*"))  # written atomically, no temp file left
        await pilot.press("l")
        assert not screen.query_one("#bottom").display
        await pilot.press("l")
        assert screen.query_one("#bottom").display

    drive(app, scenario)


def test_quit_dialog_cancel_then_stop_waits_for_the_trainer(scripted, drive, wait_until):
    scripted.start()
    scripted.steps(5)
    app = make_app(scripted)

    async def scenario(pilot):
        await wait_until(pilot, lambda: app.state.step == 5)
        await pilot.press("q")
        assert isinstance(app.screen, QuitScreen)
        await pilot.press("c")
        assert not isinstance(app.screen, QuitScreen) and control_word(scripted) is None
        await pilot.press("ctrl+q")  # the reflex quit asks too
        assert isinstance(app.screen, QuitScreen)
        await pilot.press("escape")
        assert app.is_running and control_word(scripted) is None
        await pilot.press("q", "s")
        assert control_word(scripted) == "stop"
        assert text_of(app.dashboard, "#badge").strip() == "STOPPING"
        assert app.is_running
        scripted.steps(1)
        scripted.checkpoint()
        scripted.done(reason="stopped")
        await wait_until(pilot, lambda: not app.is_running)

    assert drive(app, scenario) == "stopped"


def test_detach_leaves_the_trainer_alone(scripted, drive, wait_until):
    scripted.start()
    scripted.steps(5)
    app = make_app(scripted)

    async def scenario(pilot):
        await wait_until(pilot, lambda: app.state.step == 5)
        await pilot.press("q", "d")
        await wait_until(pilot, lambda: not app.is_running)

    assert drive(app, scenario) == "detach"
    assert control_word(scripted) is None


def test_q_on_a_finished_run_quits_at_once(scripted, drive, wait_until):
    scripted.start()
    scripted.steps(400)
    scripted.done()
    app = make_app(scripted, follow=False)

    async def scenario(pilot):
        await wait_until(pilot, lambda: app.state.finished)
        await pilot.press("p")
        assert control_word(scripted) is None  # nothing to pause
        await pilot.press("q")
        await wait_until(pilot, lambda: not app.is_running)

    assert drive(app, scenario) == "quit"


def test_merge_with_a_callback_shows_progress_and_verification(scripted, drive, wait_until):
    calls = []

    def fake_merge(request, progress):
        calls.append(request)
        for i in range(1, 5):
            progress(i, 4)
        return {"path": request.out, "verified": True,
                "report": {"verification": {"checked": True, "max_abs_diff": 1e-7, "tolerance": 1e-4, "tokens": 16}}}

    scripted.start()
    scripted.steps(3)
    app = make_app(scripted, merge=fake_merge)

    async def scenario(pilot):
        await wait_until(pilot, lambda: app.state.step == 3)
        await pilot.press("m")
        assert not calls and not isinstance(app.screen, MergeScreen)  # not before training is done
        scripted.done()
        await wait_until(pilot, lambda: app.state.finished)
        await pilot.press("m")
        await wait_until(pilot, lambda: app.state.merge.status == "done")
        assert isinstance(app.screen, MergeScreen)
        text = text_of(app.screen, "#merge-text")
        assert "✓ verified: max |Δ logit| 1.00e-07 ≤ 1.0e-04 on 16 tokens" in text and "merged.pth" in text
        bar = app.screen.query_one("#merge-bar", ProgressBar)
        assert bar.percentage == 1.0
        await pilot.press("escape")
        assert "merged model:" in text_of(app.dashboard, "#status-line")

    drive(app, scenario)
    assert calls == [MergeRequest(scripted.root, "models/rwkv7-g1-0.1b.pth", str(scripted.root / "adapter.safetensors"),
                                  str(scripted.root / "merged.pth"), None)]


def test_merge_unavailable_is_a_clear_message(scripted, drive, wait_until, monkeypatch):
    monkeypatch.setattr(merging, "MERGE_MODULE", "rwkv_tune._no_merge_here")
    scripted.start()
    scripted.steps(3)
    scripted.done()
    app = make_app(scripted, follow=False)

    async def scenario(pilot):
        await wait_until(pilot, lambda: app.state.finished)
        await pilot.press("m")
        await wait_until(pilot, lambda: app.state.merge.status == "failed")
        assert "merging is not available in this install" in text_of(app.screen, "#merge-text")

    drive(app, scenario)
    assert issubclass(MergeUnavailable, RuntimeError)


def test_trainer_merge_events_open_the_merge_dialog(scripted, drive, wait_until):
    scripted.start()
    scripted.steps(3)
    app = make_app(scripted)

    async def scenario(pilot):
        await wait_until(pilot, lambda: app.state.step == 3)
        scripted.emit("merge_progress", done=5, total=20)
        await wait_until(pilot, lambda: isinstance(app.screen, MergeScreen))
        assert app.screen.query_one("#merge-bar", ProgressBar).progress == 5
        assert "5/20 tensors" in text_of(app.screen, "#merge-text")
        scripted.emit("merge_done", path="runs/demo/merged.pth", verified=False, report=None)
        await wait_until(pilot, lambda: app.state.merge.status == "done")
        assert "✗ verification failed" in text_of(app.screen, "#merge-text")

    drive(app, scenario)


class FakeProcess:
    def __init__(self) -> None:
        self.code: int | None = None

    def poll(self) -> int | None:
        return self.code


def test_a_trainer_that_dies_without_done_is_shown(scripted, drive, wait_until):
    scripted.start()
    scripted.steps(3)
    process = FakeProcess()
    app = make_app(scripted, process=process)

    async def scenario(pilot):
        await wait_until(pilot, lambda: app.state.step == 3)
        process.code = 1
        await wait_until(pilot, lambda: app.state.status == "exited")
        assert "exited (code 1)" in text_of(app.dashboard, "#status-line")
        assert text_of(app.dashboard, "#badge").strip() == "EXITED"

    drive(app, scenario)


def test_exit_on_done_and_bad_lines(scripted, drive, wait_until):
    scripted.start()
    scripted.steps(2)
    with open(scripted.path, "a") as f:
        f.write("garbage\n")
    scripted.emit("step", step=3, loss="not a number", mem="oops")
    app = make_app(scripted, exit_on_done=True)

    async def scenario(pilot):
        await wait_until(pilot, lambda: app.state.events >= 4)
        assert app.is_running
        scripted.done()
        await wait_until(pilot, lambda: not app.is_running)

    assert drive(app, scenario) == "done"


def test_without_follow_later_events_are_not_read(scripted, drive, wait_until):
    scripted.start()
    scripted.steps(4)
    app = make_app(scripted, follow=False)

    async def scenario(pilot):
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.state.step == 4
        scripted.steps(4)
        await pilot.pause(0.1)
        assert app.state.step == 4

    drive(app, scenario)
