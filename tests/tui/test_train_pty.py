"""`rwkv-tune train` with the dashboard in a real pseudo-terminal, then `watch` on the finished run.

Also the train dashboard's ending, driven by a scripted run: it closes shortly after the run ends
unless a key was pressed, an earlier session's `done` in the same file does not end it, and it
follows the merge the trainer runs after a finished run.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path

import pytest
import yaml

from rwkv_tune.tui.app import DashboardApp, write_control
from rwkv_tune.tui.screens import MergeScreen, QuitScreen

pexpect = pytest.importorskip("pexpect")
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")


def tiny_run_inputs(root: Path, steps: int = 6, merge: bool = False) -> Path:
    """A tiny RWKV-7, a counting corpus and a CPU preset of `steps` steps; returns the preset path."""
    from rwkv_tune.data import write_binidx
    from rwkv_tune.testing import make_model

    model = make_model(root / "base.pth", version=7, n_layer=2, n_embd=64, head_size=32, vocab_size=200)
    write_binidx(root / "corpus", [[(start + i) % 190 + 5 for i in range(40)] + [0] for start in range(0, 190, 6)])
    preset = {
        "model": {"path": str(model)},
        "method": {"name": "lora", "r": 8, "alpha": 16},
        "data": {"path": str(root / "corpus"), "ctx_len": 32, "dataload": "pad"},
        "train": {"micro_bsz": 4, "epoch_steps": steps // 2, "epoch_count": 2, "lr_init": 3e-3, "lr_final": 1e-3,
                  "precision": "fp32", "grad_cp": False, "device": "cpu", "seed": 1},
        "output": {"dir": str(root / "run"), "merge": merge},
    }
    path = root / "preset.yaml"
    path.write_text(yaml.safe_dump(preset), encoding="utf-8")
    return path


def rwkv_tune_command() -> tuple[str, list[str]]:
    """The installed `rwkv-tune` script beside this interpreter, else `python -m rwkv_tune`."""
    script = Path(sys.executable).with_name("rwkv-tune")
    return (str(script), []) if script.exists() else (sys.executable, ["-m", "rwkv_tune"])


def spawn(*args: str, cwd: Path):
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30"}
    env.pop("RWKV_TUNE_NO_TUI", None)
    program, prefix = rwkv_tune_command()
    child = pexpect.spawn(program, [*prefix, *args], cwd=str(cwd), env=env, dimensions=(30, 100), timeout=90)
    child.logfile_read = io.BytesIO()
    return child


def after_dashboard(screen: bytes) -> str:
    """What the terminal shows once the dashboard has left the alternate screen."""
    return screen[screen.rfind(b"\x1b[?1049l"):].decode("utf-8", errors="replace")


def hold_paused(run: Path, timeout: float = 120.0) -> None:
    """Keep the `pause` control word in place until the trainer has paused on it.

    The trainer clears stale words when it starts and reads the word after every step, so the word is
    written again whenever it is gone: the run pauses after its first step (at the latest after its
    last: the word is read after that one too) and waits for the test. Nothing races the trainer.
    """
    from rwkv_tune.runs import read_events

    deadline = time.monotonic() + timeout
    while not any(e["event"] == "control" and e.get("action") == "pause" for e in read_events(run / "metrics.jsonl")):
        assert time.monotonic() < deadline, "the trainer never paused"
        if not (run / "control").exists():
            write_control(run, "pause")
        time.sleep(0.01)


def test_train_in_a_terminal_shows_the_dashboard_returns_to_the_shell_and_watch_reviews_it(tmp_path):
    steps = 6
    run = tmp_path / "run"
    run.mkdir()
    preset = tiny_run_inputs(tmp_path, steps=steps, merge=True)
    train = spawn("train", str(preset), cwd=tmp_path)
    try:
        hold_paused(run)
        train.expect(b"PAUSED", timeout=90)  # the dashboard is up while the trainer works (and waits)
        write_control(run, "resume")  # not a key: a key pressed keeps the dashboard open at the end
        train.expect(f"step {steps}/{steps} \xb7 finished".encode(), timeout=180)
        train.expect(b"the trainer is merging", timeout=30)  # output.merge: the dashboard shows the merge
        train.expect("\u2713 verified".encode(), timeout=60)
        train.expect(b"press any key to stay", timeout=30)
        train.expect(pexpect.EOF, timeout=30)  # nobody pressed a key: it returns to the shell by itself
    finally:
        train.close(force=True)
    screen = train.logfile_read.getvalue()
    assert train.exitstatus == 0, screen[-3000:]
    summary = after_dashboard(screen)
    assert "status   done" in summary and f"step {steps}/{steps}" in summary, summary
    assert f"adapter  {run / 'adapter.safetensors'}" in summary
    assert f"merged   {run / 'merged.pth'}" in summary and "merge    verified" in summary
    assert f"Next: rwkv-tune generate {run / 'merged.pth'}" in summary

    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    done = [e for e in events if e["event"] == "done"]
    assert len(done) == 1 and done[0]["reason"] == "finished" and done[0]["step"] == steps
    assert [e["step"] for e in events if e["event"] == "step"] == list(range(1, steps + 1))
    assert [e["action"] for e in events if e["event"] == "control"] == ["pause", "resume"]
    assert (run / "adapter.safetensors").stat().st_size > 0
    assert (run / "checkpoints" / f"step-{steps:08d}" / "complete").exists()
    assert json.loads((run / "merge-report.json").read_text())["verification"]["checked"] is True
    assert "merged" in (run / "train.log").read_text()  # the trainer's own output went there, not on screen

    watch = spawn("watch", str(run), cwd=tmp_path)
    try:
        watch.expect(b"DONE", timeout=60)
        watch.send("q")
        watch.expect(pexpect.EOF, timeout=30)
    finally:
        watch.close(force=True)
    review = after_dashboard(watch.logfile_read.getvalue())
    assert watch.exitstatus == 0, review
    assert "status   done" in review and f"step {steps}/{steps}" in review and "2 checkpoints" in review, review


def test_ctrl_c_in_the_dashboard_stops_saves_and_returns_to_the_shell(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    preset = tiny_run_inputs(tmp_path)
    train = spawn("train", str(preset), cwd=tmp_path)
    try:
        hold_paused(run)
        train.expect(b"PAUSED", timeout=90)
        train.sendcontrol("c")
        train.expect(b"STOPPING", timeout=30)
        train.expect(pexpect.EOF, timeout=60)
    finally:
        train.close(force=True)
    screen = train.logfile_read.getvalue()
    assert b"ctrl+q" not in screen
    assert train.exitstatus == 0, screen[-3000:]
    summary = after_dashboard(screen)
    assert "status   stopped" in summary, summary
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    done = events[-1]
    assert done["event"] == "done" and done["reason"] == "stopped" and 1 <= done["step"] <= 6
    assert (run / "checkpoints" / f"step-{done['step']:08d}" / "complete").exists()


# ---- the train dashboard's ending, scripted ------------------------------------------------------


class FakeProcess:
    def __init__(self) -> None:
        self.code: int | None = None

    def poll(self) -> int | None:
        return self.code


def train_app(run, **kwargs) -> DashboardApp:
    return DashboardApp(run.root, process=FakeProcess(), exit_on_done=True, poll_s=0.02, **kwargs)


def status_line(app) -> str:
    return str(app.dashboard.query_one("#status-line").render())


def test_a_finished_run_closes_the_dashboard_after_a_moment(scripted, drive, wait_until):
    scripted.start()
    scripted.steps(5)
    app = train_app(scripted, linger_s=0.3)

    async def scenario(pilot):
        await wait_until(pilot, lambda: app.state.step == 5)
        scripted.done()
        await wait_until(pilot, lambda: app.state.finished)
        assert "press any key to stay" in status_line(app)
        await wait_until(pilot, lambda: not app.is_running)

    assert drive(app, scenario) == "done"


def test_a_key_pressed_keeps_the_finished_dashboard_open(scripted, drive, wait_until):
    scripted.start()
    scripted.steps(5)
    app = train_app(scripted, linger_s=0.3)

    async def scenario(pilot):
        await wait_until(pilot, lambda: app.state.step == 5)
        scripted.done()
        await wait_until(pilot, lambda: "press any key" in status_line(app))
        await pilot.press("l")
        await pilot.pause(0.6)
        assert app.is_running and "m merges · q quits" in status_line(app)
        await pilot.press("q")

    assert drive(app, scenario) == "quit"


def test_an_earlier_sessions_done_does_not_end_a_new_one(scripted, drive, wait_until):
    scripted.start()
    scripted.steps(5)
    scripted.done(reason="interrupted")
    scripted.elapsed += 60
    app = train_app(scripted, since=scripted.now - 1)

    async def scenario(pilot):
        await wait_until(pilot, lambda: app.state.events == 7)
        await pilot.pause(0.2)
        assert app.is_running and "starting the trainer" in status_line(app)
        await pilot.press("q")  # the new trainer is still starting: q asks, it does not just quit
        assert isinstance(app.screen, QuitScreen)
        await pilot.press("c")
        scripted.start(resumed_from_step=5)
        scripted.steps(3)
        await wait_until(pilot, lambda: app.state.step == 8)
        scripted.done()
        await wait_until(pilot, lambda: app.run_over)
        assert app.is_running and "m merges" in status_line(app)  # a key was pressed: it stays
        await pilot.press("q")

    assert drive(app, scenario) == "quit"


def test_the_trainers_own_merge_is_followed_to_its_report(scripted, drive, wait_until):
    run = type(scripted)(scripted.root, merge=True)
    run.start()
    run.steps(5)
    process = FakeProcess()
    app = DashboardApp(run.root, process=process, exit_on_done=True, poll_s=0.02, since=0.0)

    async def scenario(pilot):
        await wait_until(pilot, lambda: app.state.step == 5)
        run.done()
        await wait_until(pilot, lambda: isinstance(app.screen, MergeScreen))
        assert "the trainer is merging" in str(app.screen.query_one("#merge-text").render())
        await pilot.pause(0.2)
        assert app.is_running  # not while the trainer merges
        report = {"out": {"path": str(run.root / "merged.pth"), "tensors": 72},
                  "verification": {"checked": True, "tokens": 16, "max_abs_diff": 1e-6, "tolerance": 1e-3}}
        (run.root / "merge-report.json").write_text(json.dumps(report))
        process.code = 0
        await wait_until(pilot, lambda: app.state.merge.status == "done")
        assert app.state.merge.verified is True and app.state.merge.path == str(run.root / "merged.pth")
        await wait_until(pilot, lambda: not app.is_running)

    assert drive(app, scenario) == "done"


def test_a_diverged_run_ends_the_dashboard_too(scripted, drive, wait_until):
    scripted.start()
    scripted.steps(5)
    app = train_app(scripted)

    async def scenario(pilot):
        await wait_until(pilot, lambda: app.state.step == 5)
        scripted.emit("error", kind="diverged", message="8 NaN/inf losses in a row; stopped")
        scripted.done(reason="diverged")
        await wait_until(pilot, lambda: not app.is_running)

    assert drive(app, scenario) == "diverged"


def test_the_summary_after_a_failed_run_says_why_and_where_the_log_is(scripted):
    from rich.console import Console

    from rwkv_tune.train.launcher import print_final_summary
    from rwkv_tune.tui.state import MergeState

    scripted.start()
    scripted.steps(3)
    scripted.emit("error", kind="user", message="data corpus not found")
    (scripted.root / "train.log").write_text("error: data corpus not found\n")
    console = Console(record=True, width=200)
    print_final_summary(scripted.root, MergeState(), 2, console)
    text = console.export_text()
    assert "status   error" in text and "error    data corpus not found" in text
    assert f"the trainer exited with code 2 ({scripted.root / 'train.log'})" in text
    assert "Next:" not in text

    crashed = Console(record=True, width=200)  # no error event: the log's end is the only clue
    (scripted.root / "metrics.jsonl").unlink()
    (scripted.root / "train.log").write_text("Traceback (most recent call last):\nRuntimeError: boom\n")
    print_final_summary(scripted.root, MergeState(), 1, crashed)
    text = crashed.export_text()
    assert "the end of" in text and "RuntimeError: boom" in text
