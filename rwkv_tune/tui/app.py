"""The training dashboard: a Textual app that tails a run's `metrics.jsonl` and steers the trainer.

The trainer is another process; this app reads only `metrics.jsonl` (a thread worker tails it
and posts messages) and writes one word into the run's `control` file (pause, resume, save,
stop). It never imports torch: a merge runs in a subprocess or through a callback it is given.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Protocol

from rich.text import Text
from textual import events, work
from textual.app import App
from textual.binding import Binding
from textual.timer import Timer
from textual.worker import get_current_worker

from rwkv_tune.runs import RunDir
from rwkv_tune.tui.format import one_line
from rwkv_tune.tui.merging import (
    MergeRequest,
    MergeRunner,
    adopt_merge_report,
    read_merge_report,
    result_from_report,
    subprocess_merge,
)
from rwkv_tune.tui.messages import EventsRead, MergeFinished, MergeProgressed, TailFailed, TailReset
from rwkv_tune.tui.screens import DashboardScreen, MergeScreen, QuitScreen
from rwkv_tune.tui.state import MergeState, RunState
from rwkv_tune.tui.tail import MetricsTail
from rwkv_tune.tui.widgets import EventLog

CONTROL_WORDS = ("pause", "resume", "save", "stop")
BATCH = 2000  # events per message when catching up on a long file
TRAIN_LOG = "train.log"  # where the train command sends the trainer's own output, if it does


class Process(Protocol):
    """What the app needs from the trainer's process handle (a `subprocess.Popen`)."""

    def poll(self) -> int | None: ...


def write_control(run_dir: Path, word: str) -> None:
    """Atomically replace the run's control file with one word, so the trainer never reads half of it."""
    if word not in CONTROL_WORDS:
        raise ValueError(f"unknown control word {word!r}")
    path = RunDir(Path(run_dir)).control
    tmp = path.with_name(f".control.{os.getpid()}.tmp")
    tmp.write_text(word, encoding="utf-8")
    os.replace(tmp, path)


class DashboardApp(App[str | None]):
    """Live view of one run directory; returns 'detach', 'quit', or the run's final status.

    With `exit_on_done` the app closes `linger_s` seconds after the run ends, unless the user has
    pressed a key. `since` (unix seconds) marks where this trainer session starts in a metrics file
    that earlier sessions appended to: their `done` must not end this one.
    """

    CSS_PATH = "dashboard.tcss"
    TITLE = "rwkv-tune"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [Binding("ctrl+c", "stop_and_save", "Stop and save", show=False, priority=True)]

    def __init__(self, run_dir: Path | str, *, follow: bool = True, process: Process | None = None,
                 merge: MergeRunner | None = None, exit_on_done: bool = False, linger_s: float = 0.0,
                 since: float | None = None, poll_s: float = 0.5) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.follow = follow
        self.process = process
        self.merge_runner: MergeRunner = merge or subprocess_merge
        self.exit_on_done = exit_on_done
        self.linger_s = linger_s
        self.since = since
        self.poll_s = poll_s
        self.engaged = False  # a key was pressed: the user is here, so the app stays after the run ends
        self.state = RunState()
        self.tail_error: str | None = None
        self.process_code: int | None = None
        self._process_polls_after_exit = 0
        self._exit_when_finished = False
        self._merge_dialog_shown = False
        self._merge_report_read = False
        self._session_seen = since is None
        self._linger_timer: Timer | None = None
        self._stop = threading.Event()
        self._dashboard: DashboardScreen | None = None

    # ---- lifecycle ----------------------------------------------------------------------

    def get_default_screen(self) -> DashboardScreen:
        return DashboardScreen()

    @property
    def dashboard(self) -> DashboardScreen:
        assert self._dashboard is not None, "the dashboard screen is not mounted yet"
        return self._dashboard

    def dashboard_ready(self, screen: DashboardScreen) -> None:
        """Called when the main screen is mounted: draw, then start tailing."""
        self._dashboard = screen
        self.refresh_view()
        self.tail_metrics()
        if self.process is not None:
            self.set_interval(self.poll_s, self.check_process)

    def on_unmount(self) -> None:
        self._stop.set()

    def on_key(self, event: events.Key) -> None:
        self.engaged = True
        if self._linger_timer is not None:
            self._linger_timer.stop()
            self._linger_timer = None
            self.refresh_view()

    @property
    def run_over(self) -> bool:
        """This session's trainer has ended (done, error or exited)."""
        return self.state.finished and self._session_seen

    # ---- reading metrics.jsonl ------------------------------------------------------------

    @work(thread=True, exclusive=True, group="tail", exit_on_error=False, description="tail metrics.jsonl")
    def tail_metrics(self) -> None:
        """Post the events appended to metrics.jsonl; poll until the app ends (or once, without follow)."""
        worker = get_current_worker()
        tail = MetricsTail(self.run_dir / "metrics.jsonl")
        while not worker.is_cancelled and not self._stop.is_set():
            try:
                events = tail.read_new()
            except OSError as exc:
                self.post_message(TailFailed(str(exc)))
                events = []
            if tail.reset:
                self.post_message(TailReset())
            for i in range(0, len(events), BATCH):
                self.post_message(EventsRead(events[i:i + BATCH]))
            if not self.follow:
                return
            self._stop.wait(self.poll_s)

    def on_events_read(self, message: EventsRead) -> None:
        for event in message.events:
            stamp = event.get("time")
            if (not self._session_seen and isinstance(stamp, (int, float)) and self.since is not None
                    and stamp >= self.since):
                self._session_seen = True
            try:
                self.state.apply(event)
            except Exception as exc:  # a malformed event must not take the dashboard down
                self.state.note("red", f"bad event ignored ({type(exc).__name__}: {exc}): "
                                f"{one_line(json.dumps(event, default=str), 120)}")
        self.tail_error = None
        self._follow_trainer_merge()
        if self.process is None and self.state.finished and not self._merge_report_read:
            self._merge_report_read = True  # watch: a merge by `rwkv-tune merge` shows too
            adopt_merge_report(self.state, self.run_dir)
        if self.state.merge.status == "running" and not self._merge_dialog_shown:
            self._merge_dialog_shown = True
            self.push_screen(MergeScreen())
        self.refresh_view()

    def on_tail_reset(self, message: TailReset) -> None:
        self.state = RunState()
        self.dashboard.query_one(EventLog).reset()
        self.refresh_view()

    def on_tail_failed(self, message: TailFailed) -> None:
        self.tail_error = message.error
        self.refresh_view()

    def check_process(self) -> None:
        """Notice a trainer that ended without a done event (give the tail two polls to catch up)."""
        if self.process is None or self.process_code is not None:
            return
        code = self.process.poll()
        if code is None:
            return
        self._process_polls_after_exit += 1
        if self.run_over or self._process_polls_after_exit > 2:
            self.process_code = code
            if not self.run_over:
                self._session_seen = True
                self.state.status = "exited"
                self.state.note("bold red", f"the trainer exited with code {code} before finishing")
            self._follow_trainer_merge()
            self.refresh_view()

    def _follow_trainer_merge(self) -> None:
        """Show the merge the trainer runs after a finished run (output.merge), then its report."""
        s = self.state
        if (self.process is None or not self.run_over or s.status != "done" or s.merge.status in ("done", "failed")
                or not (s.preset.get("output") or {}).get("merge")):
            return
        if self.process_code is None:
            if s.merge.status == "idle":
                s.merge = MergeState(status="running", message="the trainer is merging the adapter…")
            return
        report = read_merge_report(self.run_dir, newer_than=self.since)
        if self.process_code == 0 and report is not None:
            s.finish_merge(result_from_report(report, str(RunDir(self.run_dir).merged)))
            return
        s.merge.status = "failed"
        s.merge.message = f"the trainer's merge did not finish (exit code {self.process_code}); see {TRAIN_LOG}"
        s.note("bold red", f"merge failed: {s.merge.message}")

    # ---- rendering ------------------------------------------------------------------------

    def status_text(self) -> Text:
        """One line that says what is happening and what the user can do."""
        s = self.state
        if self.tail_error:
            return Text(f"cannot read metrics.jsonl: {self.tail_error}", "bold red")
        if s.merge.status == "running":
            if not s.merge.total and s.merge.message:
                return Text(s.merge.message, "bold cyan")
            return Text(f"merging {s.merge.done}/{s.merge.total or '?'} tensors…", "bold cyan")
        if s.merge.status == "failed":
            return Text(f"merge failed: {s.merge.message}", "bold red")
        if s.status == "waiting":
            return Text(f"waiting for {self.run_dir / 'metrics.jsonl'}…", "dim")
        if s.status == "error":
            return Text(f"error: {(s.error or {}).get('message', '')}", "bold red")
        if s.status == "exited":
            log = self.run_dir / TRAIN_LOG
            see = f"; see {log}" if log.exists() else ""
            return Text(f"the trainer exited (code {self.process_code}) before finishing{see}", "bold red")
        if s.finished and not self._session_seen:
            return Text("starting the trainer…", "dim")
        if s.finished:
            if self._linger_timer is not None:
                return Text(f"{s.status} at step {s.step} · closing in a moment, press any key to stay", "bold green")
            adapter = (s.done or {}).get("adapter") or "-"
            if s.merge.status == "done" and s.merge.notice:
                return Text(f"{s.status} · merged model: {s.merge.path} · {s.merge.notice}", "bold yellow")
            if s.merge.status == "done":
                return Text(f"{s.status} · merged model: {s.merge.path}", "bold green")
            hint = "m merges · q quits" if s.status == "done" else "q quits"
            return Text(f"{s.status} at step {s.step} · adapter {adapter} · {hint}", "bold green")
        if s.stopping:
            return Text("stopping: the trainer saves a checkpoint and ends…", "bold yellow")
        if s.paused:
            return Text("paused · p resumes", "bold yellow")
        last = next((text for style, text in reversed(s.log) if "yellow" in style), None)
        if last:
            return Text(last, "yellow")
        return Text("training · p pauses · s saves now · q quits", "dim")

    def refresh_view(self) -> None:
        if self._dashboard is None:
            return
        self._maybe_exit()
        self.dashboard.show(self.state, self.run_dir, self.status_text())
        if isinstance(self.screen, MergeScreen):
            self.screen.show(self.state.merge)

    def _maybe_exit(self) -> None:
        s = self.state
        if not self.run_over or s.merge.status == "running":
            return
        if self._exit_when_finished or (self.exit_on_done and not self.engaged and self.linger_s <= 0):
            self.exit(s.status)
        elif self.exit_on_done and not self.engaged and self._linger_timer is None:
            self._linger_timer = self.set_timer(self.linger_s, self._close_after_linger)

    def _close_after_linger(self) -> None:
        if not self.engaged:
            self.exit(self.state.status)

    # ---- commands from the keys -----------------------------------------------------------

    def send_control(self, word: str) -> None:
        """Ask the trainer (through the control file) to pause, resume, save or stop."""
        if self.run_over:
            self.notify("The run has ended.", severity="warning")
            return
        try:
            write_control(self.run_dir, word)
        except OSError as exc:
            self.notify(f"Cannot write {RunDir(self.run_dir).control}: {exc}", severity="error")
            return
        if word == "pause":
            self.state.paused = True
        elif word == "resume":
            self.state.paused = False
        elif word == "stop":
            self.state.stopping = True
        self.notify({"pause": "Pausing after the current step.", "resume": "Resuming.",
                     "save": "Saving a checkpoint after the current step.",
                     "stop": "Stopping: the trainer saves and ends."}[word])
        self.refresh_view()

    async def action_quit(self) -> None:
        """ctrl+q asks like q does, so a reflex never stops or orphans a run silently."""
        self.ask_quit()

    def action_stop_and_save(self) -> None:
        """ctrl+c does what q → s does: the trainer saves a checkpoint and stops, then the app returns."""
        if self.run_over:
            self.ask_quit()  # quits at once, or asks while a merge runs
            return
        if isinstance(self.screen, QuitScreen):
            self.screen.dismiss("stop")
            return
        self._exit_when_finished = True
        self.send_control("stop")

    def action_help_quit(self) -> None:
        """Textual's own ctrl+c ("press ctrl+q to quit") is replaced by stop-and-save."""
        self.action_stop_and_save()

    def ask_quit(self) -> None:
        """q: quit at once when nothing runs; otherwise offer stop-and-save, detach, cancel."""
        if self.run_over and self.state.merge.status != "running":
            self.exit("quit")
            return
        if isinstance(self.screen, QuitScreen):
            return

        def chosen(choice: str | None) -> None:
            if choice == "stop":
                self._exit_when_finished = True
                self.send_control("stop")
            elif choice == "detach":
                self.exit("detach")

        self.push_screen(QuitScreen(can_stop=not self.run_over), chosen)

    def start_merge(self) -> None:
        """m: merge the finished run's adapter into the base model (or show the merge in progress)."""
        merge = self.state.merge
        if merge.status in ("running", "done"):
            self.push_screen(MergeScreen())
            return
        if not self.run_over or self.state.status not in ("done", "stopped", "interrupted"):
            self.notify("Merging is available once training is done.", severity="warning")
            return
        self.state.merge = MergeState(status="running", message="starting…")
        self._merge_dialog_shown = True
        self.push_screen(MergeScreen())
        self.run_merge(self.merge_request())
        self.refresh_view()

    def merge_request(self) -> MergeRequest:
        """The run's base model (from its preset), its adapter, and merged.pth in the run directory."""
        run = RunDir(self.run_dir)
        preset = self.state.preset
        adapter = str((self.state.done or {}).get("adapter") or "")
        if not adapter or not Path(adapter).exists():
            adapter = str(run.adapter)
        base = (preset.get("model") or {}).get("path") or None
        dtype = (preset.get("output") or {}).get("merge_dtype") or None
        return MergeRequest(self.run_dir, base, adapter, str(run.merged), dtype)

    @work(thread=True, exclusive=True, group="merge", exit_on_error=False, description="merge")
    def run_merge(self, request: MergeRequest) -> None:
        """Run the merge callback off the UI thread; its progress and result come back as messages."""

        def progress(done: int, total: int) -> None:
            self.post_message(MergeProgressed(done, total))

        try:
            result = self.merge_runner(request, progress)
        except Exception as exc:  # shown in the dialog; the dashboard stays up
            message = str(exc) if isinstance(exc, RuntimeError) else f"{type(exc).__name__}: {exc}"
            self.post_message(MergeFinished(None, message))
        else:
            self.post_message(MergeFinished(result or {}, None))

    def on_merge_progressed(self, message: MergeProgressed) -> None:
        self.state.merge.status = "running"
        self.state.merge.done, self.state.merge.total = message.done, message.total
        self.refresh_view()

    def on_merge_finished(self, message: MergeFinished) -> None:
        if message.error is not None:
            self.state.merge.status, self.state.merge.message = "failed", message.error
            self.state.note("bold red", f"merge failed: {message.error}")
        elif self.state.merge.status != "done":  # the merge's own merge_done event may have come first
            self.state.finish_merge(message.result or {})
        self.refresh_view()
