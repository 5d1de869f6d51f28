"""The dashboard's widgets; each renders from a `RunState` and knows nothing about files."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Label, ProgressBar, RichLog, Static

from rwkv_tune.tui import chart
from rwkv_tune.tui.format import (
    devices_line,
    fmt_count,
    fmt_loss,
    fmt_lr,
    fmt_num,
    model_line,
    one_line,
    progress_detail,
    progress_head,
)
from rwkv_tune.tui.state import RunState


def update_static(widget: Static, content: Text | str, *, layout: bool = True) -> None:
    """Update a Static only when what it shows changed: each update costs a repaint, and a layout if asked."""
    key = (content.plain, str(content.style), tuple(content.spans)) if isinstance(content, Text) else content
    if getattr(widget, "_rwkv_shown", None) == key:
        return
    widget._rwkv_shown = key  # type: ignore[attr-defined]
    widget.update(content, layout=layout)


BADGE_CLASSES = ("waiting", "running", "paused", "stopping", "merging", "done", "stopped", "interrupted",
                 "diverged", "error", "exited")


class RunHeader(Horizontal):
    """Model spec, method, quant, preset path, devices, and a status badge."""

    def compose(self) -> ComposeResult:
        yield Static(id="header-text")
        yield Label(id="badge")

    def show(self, state: RunState, run_dir: Path) -> None:
        preset = state.preset_path or str(run_dir / "preset.yaml")
        text = Text.assemble(("rwkv-tune ", "bold"), (model_line(state), ""))
        text.append(f"\npreset {preset} · devices {devices_line(state)}", "dim")
        update_static(self.query_one("#header-text", Static), text, layout=False)
        label = state.status_label
        badge = self.query_one("#badge", Label)
        update_static(badge, f" {label.upper()} ")
        kind = label if label in BADGE_CLASSES else "waiting"
        if not badge.has_class(kind):
            badge.set_classes(kind)


class ProgressPanel(Vertical):
    """Step/total bar with the whole-run ETA; epoch, tokens, elapsed; one line of status."""

    def compose(self) -> ComposeResult:
        with Horizontal(id="progress-row"):
            yield ProgressBar(total=None, show_eta=False, id="progress-bar")
            yield Static(id="progress-head")
        yield Static(id="progress-detail")
        yield Static(id="status-line")

    def show(self, state: RunState, status: Text | str) -> None:
        bar = self.query_one(ProgressBar)
        if state.total_steps:
            bar.update(total=state.total_steps, progress=min(state.step, state.total_steps))
        update_static(self.query_one("#progress-head", Static), progress_head(state))
        update_static(self.query_one("#progress-detail", Static), progress_detail(state), layout=False)
        update_static(self.query_one("#status-line", Static), status, layout=False)


class LossChart(Widget):
    """Raw and smoothed training loss with eval loss overlaid, drawn in braille."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.state = RunState()

    def on_mount(self) -> None:
        self.border_title = "loss"
        self.border_subtitle = chart.legend()

    def show(self, state: RunState) -> None:
        self.state = state
        self.refresh()

    @property
    def points(self) -> int:
        return len(self.state.losses)

    def render(self) -> Text:
        size = self.content_size
        lines = chart.draw_chart(self.state.raw_series, self.state.smooth_series,
                                 [(s, v) for s, v, _ in self.state.evals], size.width, size.height)
        return Text("\n").join(line[: size.width] for line in lines)


def _bar(fraction: float, width: int = 10) -> Text:
    filled = round(min(1.0, max(0.0, fraction)) * width)
    style = "red" if fraction > 1.0 else "yellow" if fraction > 0.9 else "green"
    return Text.assemble(("█" * filled, style), ("░" * (width - filled), "dim"))


def memory_rows(mem: dict) -> list[tuple[str, Text | str]]:
    """GPU allocated against the estimate (with a bar and reserved), or CPU RSS."""
    alloc, estimate = mem.get("gpu_allocated_gib"), mem.get("estimate_gib")
    if alloc is None:
        rss = mem.get("cpu_rss_gib")
        return [("cpu rss", "-" if rss is None else f"{rss:.2f} GiB")]
    rows: list[tuple[str, Text | str]] = [
        ("gpu mem", f"{alloc:.2f}/{estimate:.2f} GiB est" if estimate else f"{alloc:.2f} GiB")]
    bar = _bar(float(alloc) / float(estimate)) if estimate else Text()
    if mem.get("gpu_reserved_gib") is not None:
        bar.append(f" rsv {mem['gpu_reserved_gib']:.2f}")
    if bar.plain:
        rows.append(("", bar))
    return rows


class StatsPanel(Static):
    """Latest loss, eval, lr, tokens/s, memory, grad norm and NaN/skip counters."""

    def on_mount(self) -> None:
        self.border_title = "now"

    def show(self, state: RunState) -> None:
        rows: list[tuple[str, Text | str]] = [
            ("loss", Text.assemble(fmt_loss(state.loss), (f" avg {fmt_loss(state.smoothed_loss)}", "#ffaf00"))),
        ]
        if state.evals:
            step, loss, ppl = state.evals[-1]
            rows.append(("eval", f"{fmt_loss(loss)} ppl {fmt_num(ppl)}"))
        else:
            rows.append(("eval", "-"))
        rows += [("lr", fmt_lr(state.lr)),
                 ("tokens/s", fmt_count(state.recent_tokens_per_s)),
                 ("grad norm", fmt_num(state.grad_norm))]
        rows += memory_rows(state.mem)
        counters = Text(f"{state.nonfinite} nan · {state.skipped} skip · {state.warnings} warn")
        if state.nonfinite or state.skipped:
            counters.stylize("bold yellow")
        rows.append(("issues", counters))
        # Below the fold at 80×24; shown when the terminal is taller.
        if state.evals:
            step, loss, _ = min(state.evals, key=lambda e: e[1])
            rows.append(("best eval", f"{fmt_loss(loss)} at step {step}"))
        per_step, rate = state.plan.get("tokens_per_step"), state.recent_tokens_per_s
        if per_step and rate:
            rows.append(("step time", f"{float(per_step) / rate:.2f}s · {fmt_count(per_step)} tokens"))
        if state.plan.get("trainable_params"):
            rows.append(("trainable", f"{fmt_count(state.plan['trainable_params'])} of "
                                      f"{fmt_count(state.plan.get('total_params'))} params"))
        if state.plan.get("passes_over_data"):
            rows.append(("data", f"{fmt_num(state.plan['passes_over_data'])} passes"))
        text = Text()
        for i, (name, value) in enumerate(rows):
            if i:
                text.append("\n")
            text.append(f"{name:<10}", "dim")
            text.append_text(value if isinstance(value, Text) else Text(value))
        update_static(self, text, layout=False)


class EventLog(RichLog):
    """Recent events and warnings (not steps); writes only entries it has not shown yet."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(max_lines=500, min_width=20, wrap=True, markup=False, **kwargs)  # type: ignore[arg-type]
        self.shown = 0

    def on_mount(self) -> None:
        self.border_title = "events"

    def reset(self) -> None:
        self.clear()
        self.shown = 0

    def show(self, state: RunState) -> None:
        new = min(state.log_total - self.shown, len(state.log))
        width = self.scrollable_content_region.width or None  # wrap to this log, not the terminal
        for style, line in list(state.log)[len(state.log) - new:]:
            self.write(Text(line, style), width=width)
        self.shown = state.log_total


class CheckpointList(Static):
    """Saved checkpoints, newest first."""

    def on_mount(self) -> None:
        self.border_title = "checkpoints"

    def show(self, state: RunState) -> None:
        if not state.checkpoints:
            update_static(self, Text("none yet", "dim"), layout=False)
            return
        lines = [f"step {c.get('step', '?'):>6} · {Path(str(c.get('path', ''))).name}"
                 for c in reversed(state.checkpoints[-8:])]
        update_static(self, "\n".join(escape(line) for line in lines), layout=False)


def samples_hint(state: RunState) -> str:
    """What the samples panel says before the first sample: when one comes, or how to get them."""
    every = (state.preset.get("train") or {}).get("sample_every") if isinstance(state.preset, dict) else None
    if every:
        return f"none yet (every {every} steps)"
    return "none (set train.sample_every)"


class SamplesView(Static):
    """The latest generated samples."""

    def on_mount(self) -> None:
        self.border_title = "samples"

    def show(self, state: RunState) -> None:
        if not state.samples:
            update_static(self, Text(samples_hint(state), "dim"), layout=False)
            return
        text = Text()
        for i, sample in enumerate(reversed(state.samples[-3:])):
            if i:
                text.append("\n")
            text.append(f"@{sample.get('step', '?')} ", "dim")
            text.append(one_line(sample.get("prompt", ""), 40), "bold")
            text.append(" " + one_line(sample.get("text", ""), 160))
        update_static(self, text, layout=False)
