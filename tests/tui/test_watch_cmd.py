"""`rwkv-tune watch` on a finished run, a running one, and a missing one (through a local Typer app)."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from rwkv_tune.cli import watch as watch_cmd

ANSI = re.compile(r"\x1b\[[0-9;]*m")
app = typer.Typer()
app.command()(watch_cmd.watch)


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result, ANSI.sub("", result.output)


def test_watch_reviews_a_finished_run(scripted):
    scripted.start()
    scripted.steps(400)
    scripted.eval()
    scripted.checkpoint()
    scripted.done()
    result, out = invoke(str(scripted.root))
    assert result.exit_code == 0, out
    assert "status   done" in out and "step 400/400" in out and "epoch 4/4" in out
    assert "adapter  runs/demo/adapter.safetensors" in out and "1 checkpoints" in out
    assert "2.05k tokens/s" in out


def test_watch_accepts_the_metrics_file_and_dates_a_silent_run(scripted):
    scripted.start()
    scripted.steps(3)
    result, out = invoke(str(scripted.path), "--plain", "--no-follow")
    assert result.exit_code == 0, out
    assert "status   running (last event" in out and "ETA" in out


def test_watch_a_missing_run_is_a_one_line_error(tmp_path):
    result, out = invoke(str(tmp_path / "nope"))
    assert result.exit_code == 2
    assert "does not exist" in out and "output.dir" in out


def test_watch_on_a_terminal_opens_the_dashboard(scripted, monkeypatch):
    scripted.start()
    scripted.steps(2)
    opened = []

    def fake_run(self):
        opened.append((self.run_dir, self.follow))
        return "detach"

    monkeypatch.setattr("rwkv_tune.tui.app.DashboardApp.run", fake_run)
    monkeypatch.delenv("RWKV_TUNE_NO_TUI", raising=False)
    monkeypatch.setattr(watch_cmd.sys, "stdout", _Tty())
    watch_cmd.watch(scripted.root, no_follow=True, plain=False)
    assert opened == [(scripted.root, False)]


class _Tty:
    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("flag", ["--plain"])
def test_watch_without_events_says_so(tmp_path, flag):
    (tmp_path / "run").mkdir()
    result, out = invoke(str(tmp_path / "run"), flag)
    assert result.exit_code == 2 and "does not exist yet" in out
