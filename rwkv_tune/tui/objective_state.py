"""What DPO, ORPO and GRPO runs add to a run's state: their step and eval fields, folded per event.

Pure (no Textual, no torch). `RunState` keeps one `ObjectiveState`; it stays empty (`kind` None) for
SFT, so the dashboard shows the objective's panels only when the events carry their fields:
  GRPO: reward_mean/std, reward/<function>/mean, kl, clip_fraction, completion_length; rollouts.jsonl
  DPO:  reward_margin, reward_chosen/rejected, pref_accuracy;  ORPO: log_odds_ratio, nll_chosen, pref_accuracy
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rwkv_tune.tui.chart import Series

REWARD_PREFIX = "reward/"
ROLLOUTS_FILE = "rollouts.jsonl"
# the fields of one step each objective's summary line shows, with their short labels
SUMMARY = {
    "grpo": (("reward_mean", "reward"), ("reward_std", "±"), ("kl", "kl"), ("clip_fraction", "clip"),
             ("completion_length", "len")),
    "dpo": (("reward_margin", "margin"), ("pref_accuracy", "pref_acc"), ("reward_chosen", "chosen"),
            ("reward_rejected", "rejected")),
    "orpo": (("log_odds_ratio", "log_odds"), ("pref_accuracy", "pref_acc"), ("nll_chosen", "nll")),
}


def objective_of(fields: dict[str, Any]) -> str | None:
    """grpo, dpo or orpo from the fields a step or eval event carries; None for SFT."""
    if "reward_mean" in fields:
        return "grpo"
    if "reward_margin" in fields:
        return "dpo"
    if "log_odds_ratio" in fields:
        return "orpo"
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _numbers(fields: dict[str, Any]) -> dict[str, float]:
    """The finite number fields of an event."""
    return {key: number for key, value in fields.items() if (number := _number(value)) is not None}


def _short(value: float) -> str:
    return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"


def summary(fields: dict[str, Any]) -> str:
    """'reward 0.62 · ± 0.4 · kl 0.01 …' for an objective's step/eval fields; '' for SFT."""
    kind = objective_of(fields)
    if kind is None:
        return ""
    parts = []
    for key, label in SUMMARY[kind]:
        value = _number(fields.get(key))
        if value is not None:
            parts.append(f"{label} {_short(value)}")
    return " · ".join(parts)


@dataclass
class ObjectiveState:
    """The objective's curves and latest values (empty for SFT)."""

    kind: str | None = None  # grpo | dpo | orpo, from the preset or the first step carrying their fields
    latest: dict[str, float] = field(default_factory=dict)
    reward: Series = field(default_factory=Series)  # grpo: mean total reward per step
    rewards: dict[str, Series] = field(default_factory=dict)  # grpo: each function's mean reward
    margin: Series = field(default_factory=Series)  # dpo: reward margin; orpo: log odds ratio
    accuracy: Series = field(default_factory=Series)  # dpo/orpo: batch preference accuracy
    evals: list[dict[str, float]] = field(default_factory=list)  # dpo/orpo: held-out fields per eval

    @property
    def active(self) -> bool:
        return self.kind is not None

    def start(self, preset: dict[str, Any], resumed_from: int | None) -> None:
        """A run_start: the kind from the preset's objective; curves past a resume point are dropped."""
        kind = (preset.get("objective") or {}).get("type") if isinstance(preset.get("objective"), dict) else None
        if kind in SUMMARY:
            self.kind = kind
        if resumed_from is not None:
            for series in (self.reward, self.margin, self.accuracy, *self.rewards.values()):
                series.buckets = [b for b in series.buckets if b[0] * series.width <= resumed_from]
            self.evals = [e for e in self.evals if e.get("step", 0) <= resumed_from]

    def on_step(self, step: int, fields: dict[str, Any]) -> None:
        kind = objective_of(fields)
        if kind is None:
            return
        self.kind = kind
        self.latest = _numbers(fields)
        if kind == "grpo":
            if "reward_mean" in self.latest:
                self.reward.add(step, self.latest["reward_mean"])
            for key, value in self.latest.items():
                if key.startswith(REWARD_PREFIX) and key.endswith("/mean"):
                    name = key[len(REWARD_PREFIX):-len("/mean")]
                    self.rewards.setdefault(name, Series()).add(step, value)
            return
        margin = self.latest.get("reward_margin", self.latest.get("log_odds_ratio"))
        if margin is not None:
            self.margin.add(step, margin)
        if "pref_accuracy" in self.latest:
            self.accuracy.add(step, self.latest["pref_accuracy"])

    def on_eval(self, step: int, fields: dict[str, Any]) -> None:
        if objective_of(fields) is None and "pref_accuracy" not in fields:
            return
        self.evals.append({**_numbers(fields), "step": step})
        del self.evals[:-50]


def recent_rollouts(run_dir: str | Path, limit: int = 5) -> list[dict[str, Any]]:
    """The last `limit` groups of a run's rollouts.jsonl (read from the end; a torn line is skipped)."""
    path = Path(run_dir) / ROLLOUTS_FILE
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            tail = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return []
    out = []
    for line in reversed(tail):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            out.append(record)
        if len(out) >= limit:
            break
    return out[::-1]
