"""The dashboard screen, the quit dialog and the merge progress dialog."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Label, ProgressBar, Static

from rwkv_tune.tui.objective_widgets import ObjectiveChart, ObjectiveStats, RolloutsView, show_objective
from rwkv_tune.tui.state import MergeState, RunState
from rwkv_tune.tui.widgets import (
    CheckpointList,
    EventLog,
    LossChart,
    ProgressPanel,
    RunHeader,
    SamplesView,
    StatsPanel,
)

if TYPE_CHECKING:
    from rwkv_tune.tui.app import DashboardApp


class DashboardScreen(Screen[None]):
    """Header, progress, loss chart, live numbers, events, checkpoints and samples."""

    BINDINGS = [
        Binding("p", "pause", "Pause"),
        Binding("p", "resume", "Resume"),
        Binding("s", "save", "Save now"),
        Binding("m", "merge", "Merge"),
        Binding("l", "toggle_log", "Log"),
        Binding("q", "quit_dialog", "Quit"),
    ]

    _keys_shown: tuple[bool, bool] | None = None

    @property
    def dashboard(self) -> DashboardApp:
        return cast("DashboardApp", self.app)

    def compose(self) -> ComposeResult:
        yield RunHeader(id="header")
        yield ProgressPanel(id="progress")
        with Horizontal(id="middle"):
            yield LossChart(id="chart")
            yield ObjectiveChart(id="objective-chart")  # dpo/orpo/grpo only
            yield StatsPanel(id="stats")
        with Horizontal(id="bottom"):
            yield EventLog(id="log")
            yield RolloutsView(id="rollouts")  # grpo only
            with Vertical(id="side"):
                yield ObjectiveStats(id="objective-stats")  # dpo/orpo/grpo only
                yield CheckpointList(id="checkpoints")
                yield SamplesView(id="samples")
        yield Footer()

    def on_mount(self) -> None:
        self.dashboard.dashboard_ready(self)

    def show(self, state: RunState, run_dir: Path, status: Text | str) -> None:
        """Render the whole state (cheap: each widget redraws from a few numbers)."""
        self.query_one(RunHeader).show(state, run_dir)
        self.query_one(ProgressPanel).show(state, status)
        self.query_one(LossChart).show(state)
        self.query_one(StatsPanel).show(state)
        self.query_one(EventLog).show(state)
        self.query_one(CheckpointList).show(state)
        self.query_one(SamplesView).show(state)
        show_objective(self, state, run_dir)
        keys = (self.dashboard.run_over, state.paused)
        if keys != self._keys_shown:  # redrawing the footer is costly; its keys change only with these
            self._keys_shown = keys
            self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        state = self.dashboard.state
        live = not self.dashboard.run_over
        if action == "pause":
            return live and not state.paused
        if action in ("resume", "save"):
            return live and (state.paused or action == "save")
        return True

    def action_pause(self) -> None:
        self.dashboard.send_control("pause")

    def action_resume(self) -> None:
        self.dashboard.send_control("resume")

    def action_save(self) -> None:
        self.dashboard.send_control("save")

    def action_merge(self) -> None:
        self.dashboard.start_merge()

    def action_toggle_log(self) -> None:
        bottom = self.query_one("#bottom")
        bottom.display = not bottom.display

    def action_quit_dialog(self) -> None:
        self.dashboard.ask_quit()


class QuitScreen(ModalScreen[str]):
    """Stop and save, detach (training goes on), or cancel."""

    BINDINGS = [
        Binding("s", "choose('stop')", "Stop and save"),
        Binding("d", "choose('detach')", "Detach"),
        Binding("escape,c", "choose('cancel')", "Cancel"),
    ]

    def __init__(self, *, can_stop: bool = True) -> None:
        super().__init__()
        self.can_stop = can_stop

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Quit the dashboard?", id="dialog-title")
            yield Static("Stop: the trainer saves a checkpoint and ends.\n"
                         "Detach: training goes on; `rwkv-tune watch RUN_DIR` attaches again.", id="dialog-text")
            with Horizontal(id="dialog-buttons"):
                if self.can_stop:
                    yield Button("Stop and save (s)", variant="error", id="stop")
                yield Button("Detach (d)", variant="primary", id="detach")
                yield Button("Cancel (c)", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id or "cancel")

    def action_choose(self, choice: str) -> None:
        if choice == "stop" and not self.can_stop:
            return
        self.dismiss(choice)


class MergeScreen(ModalScreen[None]):
    """Merge progress over tensors, then the verification result and the output path."""

    BINDINGS = [Binding("escape,enter,m", "close", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Merging the adapter into the base model", id="dialog-title")
            yield ProgressBar(total=None, show_eta=False, id="merge-bar")
            yield Static(id="merge-text")
            with Horizontal(id="dialog-buttons"):
                yield Button("Close (esc)", id="close")

    ready = False

    def on_mount(self) -> None:
        self.ready = True
        self.show(cast("DashboardApp", self.app).state.merge)

    def show(self, merge: MergeState) -> None:
        if not self.ready:
            return
        bar = self.query_one(ProgressBar)
        if merge.total:
            bar.update(total=merge.total, progress=merge.done)
        elif merge.status in ("done", "failed"):
            bar.update(total=1, progress=1 if merge.status == "done" else 0)
        self.query_one("#dialog-title", Label).update(
            {"done": "Merged the adapter into the base model", "failed": "The merge failed"}.get(
                merge.status, "Merging the adapter into the base model…"))
        self.query_one("#merge-text", Static).update(merge_text(merge))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)


def merge_text(merge: MergeState) -> Text:
    """What the merge dialog says: progress, verification, output path or the failure."""
    if merge.status == "failed":
        return Text(f"merge failed: {merge.message}", "bold red")
    if merge.status == "running":
        if merge.total:
            return Text(f"merging: {merge.done}/{merge.total} tensors")
        return Text(merge.message or "merging: starting…")
    if merge.status == "done":
        text = Text()
        if merge.verified is True:
            text.append("✓ verified", "bold green")
        elif merge.verified is False:
            text.append("✗ verification failed", "bold red")
        else:
            text.append("not verified", "yellow")
        text.append_text(report_details(merge.report))
        text.append(f"\nmerged model: {merge.path or '-'}")
        return text
    return Text(merge.message or "idle", "dim")


def report_details(report: Any) -> Text:
    """The verification line of a merge report (rwkv_tune.merge's shape, or any flat dict)."""
    if not isinstance(report, dict):
        return Text()
    check = report.get("verification")
    if isinstance(check, dict) and check.get("checked"):
        return Text(f": max |Δ logit| {check.get('max_abs_diff', 0):.2e} ≤ {check.get('tolerance', 0):.1e} "
                    f"on {check.get('tokens', '?')} tokens", "dim")
    if isinstance(check, dict):
        return Text(f": logits not compared ({check.get('skipped', '?')})", "dim")
    details = [f"{k} {v}" for k, v in report.items() if isinstance(v, (int, float, str, bool))]
    return Text(" · " + " · ".join(details[:4]), "dim") if details else Text()
