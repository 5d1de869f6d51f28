"""A run's live state, folded one `metrics.jsonl` event at a time.

Pure (no Textual, no torch): the dashboard, `rwkv-tune watch --plain` and the plain progress
printer all render from one `RunState` (text in `format.py`), so they cannot disagree.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from rwkv_tune.tui.chart import Series
from rwkv_tune.tui.format import fmt_loss, fmt_num, one_line, plan_line
from rwkv_tune.tui.objective_state import ObjectiveState

RATE_WINDOW = 20  # recent steps whose tokens/s set the ETA (robust to start-up and resume)
SMOOTH_BETA = 0.9  # EMA factor of the smoothed loss curve
LOG_KEEP = 500


@dataclass
class MergeState:
    """Progress and result of merging the adapter into the base model."""

    status: str = "idle"  # idle | running | done | failed
    done: int = 0
    total: int = 0
    path: str | None = None
    verified: bool | None = None
    report: Any = None
    message: str = ""
    notice: str = ""  # the merged model is stale, or from a run that stopped early (run_merges.merge_notice)


@dataclass
class RunState:
    """Everything the dashboard shows, updated one event at a time by `apply`."""

    run: str = ""
    preset: dict = field(default_factory=dict)
    spec: dict = field(default_factory=dict)
    plan: dict = field(default_factory=dict)
    devices: str = ""
    preset_path: str = ""
    resumed_from_step: int | None = None
    status: str = "waiting"  # waiting | running | done | stopped | interrupted | diverged | error | exited
    paused: bool = False
    stopping: bool = False
    step: int = 0
    epoch: int | None = None
    loss: float | None = None
    smoothed_loss: float | None = None
    lr: float | None = None
    tokens: int | None = None
    tokens_per_s: float | None = None
    elapsed_s: float | None = None
    grad_norm: float | None = None
    mem: dict = field(default_factory=dict)
    losses: list[tuple[int, float]] = field(default_factory=list)
    smoothed: list[tuple[int, float]] = field(default_factory=list)
    evals: list[tuple[int, float, float | None]] = field(default_factory=list)
    nonfinite: int = 0
    skipped: int = 0
    warnings: int = 0
    samples: list[dict] = field(default_factory=list)
    checkpoints: list[dict] = field(default_factory=list)
    done: dict | None = None
    error: dict | None = None
    merge: MergeState = field(default_factory=MergeState)
    objective: ObjectiveState = field(default_factory=ObjectiveState)  # dpo/orpo/grpo fields (empty for sft)
    raw_series: Series = field(default_factory=Series)
    smooth_series: Series = field(default_factory=Series)
    log: deque = field(default_factory=lambda: deque(maxlen=LOG_KEEP))
    log_total: int = 0
    events: int = 0
    last_time: float | None = None
    _rates: deque = field(default_factory=lambda: deque(maxlen=RATE_WINDOW))
    _ema: float = 0.0
    _ema_n: int = 0
    _skipped_before: int = 0

    # ---- folding events -------------------------------------------------------------------

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one event into the state (unknown event types are logged, never fatal)."""
        self.events += 1
        if isinstance(event.get("time"), (int, float)):
            self.last_time = float(event["time"])
        kind = event.get("event")
        handler = getattr(self, f"_on_{kind}", None)
        if handler is None:
            self.note("dim", f"event {kind!r} ignored")
            return
        handler(event)

    def note(self, style: str, text: str) -> None:
        """Add a line to the events log."""
        self.log.append((style, text))
        self.log_total += 1

    def _on_run_start(self, e: dict) -> None:
        self.run = str(e.get("run") or self.run)
        self.preset = _dict(e.get("preset"))
        self.spec = _dict(e.get("spec"))
        self.plan = {k: v for k, v in _dict(e.get("plan")).items() if _num(v) is not None}
        self.devices = str(e.get("devices") or "")
        self.preset_path = str(e.get("preset_path") or "")
        self.resumed_from_step = _int(e.get("resumed_from_step"))
        self.status = "running"
        self.paused = self.stopping = False
        self.done = self.error = None
        self._rates.clear()
        self._skipped_before = self.skipped
        self.objective.start(self.preset, self.resumed_from_step)
        if self.resumed_from_step is not None:
            # Steps after the resume point are being redone: drop them so the curve does not fold back.
            cut = int(self.resumed_from_step)
            self.losses = [p for p in self.losses if p[0] <= cut]
            self.smoothed = [p for p in self.smoothed if p[0] <= cut]
            self.evals = [p for p in self.evals if p[0] <= cut]
            self.raw_series, self.smooth_series = Series.of(self.losses), Series.of(self.smoothed)
            self.step = min(self.step, cut)
            self.note("bold", f"resumed from step {cut}; {plan_line(self.plan)}")
        else:
            self.note("bold", f"started: {plan_line(self.plan)}")

    def _on_step(self, e: dict) -> None:
        if self.status == "waiting":
            self.status = "running"
        self.step = _int(e.get("step"), self.step)
        self.epoch = _int(e.get("epoch"), self.epoch)
        self.lr = _num(e.get("lr"), self.lr)
        self.tokens = _int(e.get("tokens"), self.tokens)
        self.elapsed_s = _num(e.get("elapsed_s"), self.elapsed_s)
        self.grad_norm = _num(e.get("grad_norm"))
        mem = e.get("mem")
        if isinstance(mem, dict):
            self.mem = {k: _num(v) for k, v in mem.items()}
        rate = _num(e.get("tokens_per_s"))
        if rate is not None and rate > 0:
            self.tokens_per_s = rate
            self._rates.append(rate)
        skipped = e.get("skipped")
        if isinstance(skipped, bool):
            self.skipped += int(skipped)
        elif isinstance(skipped, int):
            self.skipped = self._skipped_before + skipped
        self.objective.on_step(self.step, e)
        loss = e.get("loss")
        value = _num(loss)
        if value is not None and math.isfinite(value):
            self.loss = value
            self.losses.append((self.step, value))
            self.raw_series.add(self.step, value)
            self._ema = SMOOTH_BETA * self._ema + (1 - SMOOTH_BETA) * value
            self._ema_n += 1
            self.smoothed_loss = self._ema / (1 - SMOOTH_BETA**self._ema_n)
            self.smoothed.append((self.step, self.smoothed_loss))
            self.smooth_series.add(self.step, self.smoothed_loss)
        elif loss is not None:
            self.nonfinite += 1
            self.loss = float("nan")

    def _on_eval(self, e: dict) -> None:
        self.objective.on_eval(_int(e.get("step"), self.step) or 0, e)
        loss = _num(e.get("loss"))
        if loss is not None and math.isfinite(loss):
            step = _int(e.get("step"), self.step) or 0
            self.evals.append((step, loss, _num(e.get("ppl"))))
            self.note("cyan", f"[step {step}] eval loss {fmt_loss(loss)} · ppl {fmt_num(e.get('ppl'))}")

    def _on_sample(self, e: dict) -> None:
        self.samples.append(e)
        del self.samples[:-20]
        self.note("magenta", f"[step {e.get('step', self.step)}] sample: {one_line(e.get('text', ''), 80)}")

    def _on_checkpoint(self, e: dict) -> None:
        self.checkpoints.append(e)
        self.note("green", f"[step {e.get('step', self.step)}] checkpoint saved: {e.get('path', '')}")

    def _on_warning(self, e: dict) -> None:
        self.warnings += 1
        self.note("yellow", f"[step {self.step}] warning: {e.get('message', '')}")

    def _on_error(self, e: dict) -> None:
        if e.get("kind") == "merge":
            self.merge.status = "failed"
            self.merge.message = str(e.get("message", ""))
        else:
            self.error = e
            self.status = "error"
        self.note("bold red", f"[step {self.step}] error ({e.get('kind', '?')}): {e.get('message', '')}")

    def _on_done(self, e: dict) -> None:
        self.done = e
        self.step = _int(e.get("step"), self.step) or 0
        reason = str(e.get("reason") or "finished")
        self.status = {"finished": "done"}.get(reason, reason)
        self.paused = self.stopping = False
        if e.get("merged"):
            self.merge.status, self.merge.path = "done", str(e["merged"])
        self.note("bold green", f"[step {self.step}] {reason}; adapter: {e.get('adapter') or '-'}"
                  + (f"; merged: {e['merged']}" if e.get("merged") else ""))

    def _on_control(self, e: dict) -> None:
        action = str(e.get("action", ""))
        if action in ("pause", "paused"):
            self.paused = True
        elif action in ("resume", "resumed"):
            self.paused = False
        elif action in ("stop", "stopping"):
            self.stopping = True
        self.note("blue", f"[step {self.step}] trainer: {action}")

    def _on_merge_progress(self, e: dict) -> None:
        self.merge.status = "running"
        self.merge.done = _int(e.get("done"), 0) or 0
        self.merge.total = _int(e.get("total"), 0) or 0

    def _on_merge_done(self, e: dict) -> None:
        self.finish_merge(e)

    def finish_merge(self, result: dict) -> None:
        """Record a finished merge: {path, verified, report}."""
        self.merge.status = "done"
        self.merge.done = self.merge.total or self.merge.done
        self.merge.path = str(result.get("path") or "") or None
        self.merge.verified = result.get("verified")
        self.merge.report = result.get("report")
        mark = {True: "verified", False: "VERIFICATION FAILED", None: "not verified"}[self.merge.verified]
        self.note("bold green" if self.merge.verified else "bold yellow", f"merged: {self.merge.path} ({mark})")

    # ---- derived values -------------------------------------------------------------------

    @property
    def total_steps(self) -> int | None:
        total = self.plan.get("total_steps")
        return int(total) if total else None

    @property
    def finished(self) -> bool:
        """The trainer has ended (done, error or exited): nothing more will come from this session."""
        return self.status in ("done", "stopped", "interrupted", "diverged", "error", "exited")

    @property
    def display_epoch(self) -> int | None:
        """1-based epoch of the latest step, from the plan when known (the event's own field otherwise)."""
        epoch_steps = self.plan.get("epoch_steps")
        if epoch_steps and self.step > 0:
            count = self.plan.get("epoch_count") or 10**9
            return min(int(count), (self.step - 1) // int(epoch_steps) + 1)
        return None if self.epoch is None else int(self.epoch) + 1

    @property
    def recent_tokens_per_s(self) -> float | None:
        """Mean tokens/s over the last steps of the current session."""
        return sum(self._rates) / len(self._rates) if self._rates else None

    @property
    def eta_s(self) -> float | None:
        """Seconds left for the whole run: remaining steps × tokens per step ÷ recent tokens/s."""
        total = self.total_steps
        if total is None:
            return None
        remaining = max(0, total - self.step)
        if remaining == 0:
            return 0.0
        if self.objective.active and self.elapsed_s and self.step:  # pairs/groups vary in tokens: time per step
            return remaining * self.elapsed_s / self.step
        rate, per_step = self.recent_tokens_per_s, self.plan.get("tokens_per_step")
        if not rate or not per_step:
            return None
        return remaining * float(per_step) / rate

    @property
    def status_label(self) -> str:
        if self.merge.status == "running":
            return "merging"
        if not self.finished and self.stopping:
            return "stopping"
        if not self.finished and self.paused:
            return "paused"
        return self.status


def _num(value: Any, default: float | None = None) -> float | None:
    """A float from an event field, or `default` when it is missing or not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return float(value)


def _int(value: Any, default: int | None = None) -> int | None:
    number = _num(value)
    return default if number is None or not math.isfinite(number) else int(number)


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}
