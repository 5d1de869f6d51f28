"""The dashboard's panels for DPO, ORPO and GRPO runs, shown only when the step events carry their fields.

  ObjectiveChart  GRPO: the mean reward and one curve per reward function; DPO/ORPO: the margin (log odds
                  ratio) and the preference accuracy, with held-out accuracy from `eval` events as points
  ObjectiveStats  the latest objective fields (reward ± std, kl, clip; margin, chosen/rejected, accuracy)
  RolloutsView    GRPO: the last groups of rollouts.jsonl (prompt, completions, rewards), in place of samples
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual.widget import Widget
from textual.widgets import Static

from rwkv_tune.tui import chart
from rwkv_tune.tui.chart import Series
from rwkv_tune.tui.format import one_line
from rwkv_tune.tui.objective_state import SUMMARY, ObjectiveState, recent_rollouts
from rwkv_tune.tui.state import RunState

TITLES = {"grpo": "reward", "dpo": "reward margin · pref accuracy", "orpo": "log odds ratio · pref accuracy"}


def objective_curves(o: ObjectiveState) -> list[tuple[str, Series, list[tuple[int, float]]]]:
    """(label, series, eval points) for each curve the objective chart draws, top to bottom."""
    if o.kind == "grpo":
        curves = [("reward (mean)", o.reward, [])]
        if len(o.rewards) > 1 or (o.rewards and not len(o.reward)):
            curves += [(f"reward {name}", series, []) for name, series in o.rewards.items()]
        return curves
    held_out = [(int(e["step"]), e["pref_accuracy"]) for e in o.evals if "pref_accuracy" in e]
    margin = "reward margin" if o.kind == "dpo" else "log odds ratio"
    return [(margin, o.margin, []), ("pref accuracy (■ held out)", o.accuracy, held_out)]


class ObjectiveChart(Widget):
    """Stacked braille charts of the objective's curves (hidden for SFT)."""

    DEFAULT_CSS = """
    ObjectiveChart {
        width: 1fr;
        border: round $primary-darken-1;
        border-title-color: $text;
        padding: 0 1 0 0;
        display: none;
    }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.objective = ObjectiveState()

    def show(self, state: RunState) -> None:
        self.objective = state.objective
        self.border_title = TITLES.get(state.objective.kind or "", "objective")
        self.refresh()

    def render(self) -> Text:
        size = self.content_size
        curves = objective_curves(self.objective)
        if not curves:
            return Text("")
        height = max(3, size.height // len(curves))
        lines: list[Text] = []
        for label, series, evals in curves:
            part = chart.draw_chart(series, series, evals, size.width, height - 1)
            lines.append(Text(one_line(label, size.width), "bold"))
            lines += part
        return Text("\n").join(line[: size.width] for line in lines[: size.height])


class ObjectiveStats(Static):
    """The objective's latest numbers, under the `now` panel (hidden for SFT)."""

    DEFAULT_CSS = """
    ObjectiveStats {
        height: auto;
        max-height: 8;
        border: round $primary-darken-1;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        display: none;
    }
    """

    def on_mount(self) -> None:
        self.border_title = "objective"

    def show(self, state: RunState) -> None:
        o = state.objective
        text = Text()
        rows = [(label, o.latest[key]) for key, label in SUMMARY.get(o.kind or "", ()) if key in o.latest]
        if o.kind == "grpo":
            rows += [(name[:9], series.bands()[-1][3]) for name, series in o.rewards.items() if series.bands()]
        held_out = [e for e in o.evals if "pref_accuracy" in e]
        if held_out:
            rows.append(("held out", held_out[-1]["pref_accuracy"]))
        for i, (name, value) in enumerate(rows):
            if i:
                text.append("\n")
            text.append(f"{name:<10}", "dim")
            text.append(f"{value:.4g}")
        self.update(text)


class RolloutsView(Static):
    """GRPO: the newest groups from rollouts.jsonl, best completion first (hidden otherwise)."""

    DEFAULT_CSS = """
    RolloutsView {
        width: 1fr;
        height: 100%;
        border: round $secondary-darken-1;
        padding: 0 1;
        text-overflow: ellipsis;
        display: none;
    }
    """
    SHOWN: ClassVar[int] = 3

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.read_at_step: int | None = None
        self.groups: list[dict[str, Any]] = []

    def on_mount(self) -> None:
        self.border_title = "recent rollouts"

    def show(self, state: RunState, run_dir: Path) -> None:
        if self.read_at_step == state.step:  # read the file once per new step, not on every redraw
            return
        self.read_at_step = state.step
        self.groups = recent_rollouts(run_dir, self.SHOWN)
        self.update(rollouts_text(self.groups))


def rollouts_text(groups: list[dict[str, Any]]) -> Text:
    """Each group: its prompt, mean reward and the best and worst completion."""
    if not groups:
        return Text("none yet (rollouts.jsonl)", "dim")
    text = Text()
    for i, group in enumerate(reversed(groups)):
        rewards = [r for r in group.get("rewards", []) if isinstance(r, (int, float))]
        completions = group.get("completions", [])
        if i:
            text.append("\n")
        mean = sum(rewards) / len(rewards) if rewards else float("nan")
        text.append(f"#{group.get('group', '?')} ", "dim")
        text.append(one_line(group.get("prompt", ""), 40), "bold")
        text.append(f" · reward {mean:.2f}\n", "cyan")
        if rewards and len(completions) == len(rewards):
            best = max(range(len(rewards)), key=rewards.__getitem__)
            worst = min(range(len(rewards)), key=rewards.__getitem__)
            text.append(f"  + {rewards[best]:.2f} ", "green")
            text.append(one_line(completions[best], 120))
            if worst != best:
                text.append(f"\n  - {rewards[worst]:.2f} ", "red")
                text.append(one_line(completions[worst], 120))
    return text


def show_objective(screen: Any, state: RunState, run_dir: Path) -> None:
    """Show the objective's panels once its fields arrive (GRPO rollouts in place of samples); SFT: nothing."""
    o = state.objective
    if not o.active:
        return
    chart_widget, stats = screen.query_one(ObjectiveChart), screen.query_one(ObjectiveStats)
    chart_widget.display = stats.display = True
    chart_widget.show(state)
    stats.show(state)
    if o.kind == "grpo":
        rollouts = screen.query_one(RolloutsView)
        rollouts.display = True
        screen.query_one("#samples").display = False
        rollouts.show(state, run_dir)
