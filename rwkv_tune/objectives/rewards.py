"""Reward functions for GRPO: built-ins and the user's own `module:function`, weighted and summed.

Every reward is called as fn(prompt=str, completion=str, record=dict) → float.
Built-ins:
  exact_answer  1 if the completion (or its last line, or the text after its last '####') equals the
                record's "answer" (whitespace and case ignored), else 0
  regex         1 if `pattern` is found in the completion, else 0
  length        1 − |len(completion) − target| / target, floored at 0 (characters)
  format        1 if the whole completion matches `pattern` (default: <think>…</think> <answer>…</answer>)
A user function that raises, or returns something that is not a finite number, stops the run with a
UserError naming the function and the record.
"""

from __future__ import annotations

import importlib
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rwkv_tune.errors import ConfigError, UserError
from rwkv_tune.objectives.config import RewardSpec

DEFAULT_FORMAT = r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*"
RewardFn = Callable[..., float]


def _normal(text: str) -> str:
    return " ".join(str(text).split()).casefold()


def exact_answer(prompt: str, completion: str, record: dict[str, Any]) -> float:
    if record.get("answer") is None:
        return 0.0
    answer = _normal(record["answer"])
    lines = [line for line in completion.strip().splitlines() if line.strip()]
    candidates = {_normal(completion), _normal(lines[-1]) if lines else "", _normal(completion.rpartition("####")[2])}
    return 1.0 if answer in candidates else 0.0


def _regex(pattern: str) -> RewardFn:
    compiled = re.compile(pattern)

    def regex(prompt: str, completion: str, record: dict[str, Any]) -> float:
        return 1.0 if compiled.search(completion) else 0.0

    return regex


def _length(target: int) -> RewardFn:
    def length(prompt: str, completion: str, record: dict[str, Any]) -> float:
        return max(0.0, 1.0 - abs(len(completion) - target) / target)

    return length


def _format(pattern: str | None) -> RewardFn:
    compiled = re.compile(pattern or DEFAULT_FORMAT, re.S)

    def format_reward(prompt: str, completion: str, record: dict[str, Any]) -> float:
        return 1.0 if compiled.fullmatch(completion) else 0.0

    return format_reward


def load_user_function(ref: str, search_path: str | Path | None = None) -> RewardFn:
    """Import 'module:function' (from `search_path`, e.g. the preset's folder, first)."""
    module_name, _, attr = ref.partition(":")
    if search_path is not None and str(search_path) not in sys.path:
        sys.path.insert(0, str(search_path))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"reward fn {ref!r}: cannot import module {module_name!r} ({exc})",
                          "Put the module beside the preset (or on PYTHONPATH).") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"reward fn {ref!r}: module {module_name!r} has no function {attr!r}",
                          "Check the name after the colon.")
    return fn


@dataclass
class Reward:
    """One weighted reward term, ready to call."""

    label: str
    weight: float
    fn: RewardFn

    def __call__(self, prompt: str, completion: str, record: dict[str, Any], where: str) -> float:
        try:
            value = self.fn(prompt=prompt, completion=completion, record=record)
        except Exception as exc:  # noqa: BLE001 - any failure in user code is reported as the user's
            raise UserError(f"reward function {self.label!r} raised {type(exc).__name__}: {exc} on {where} "
                            f"{_short(record)}", "Fix the function (it is called with prompt, completion, record) "
                            "and resume with --resume auto.") from exc
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"reward function {self.label!r} returned {value!r} on {where} {_short(record)}",
                            "Return a finite float.")
        return float(value)


def _short(record: dict[str, Any], limit: int = 120) -> str:
    text = repr(record)
    return text if len(text) <= limit else text[:limit] + "…}"


def build_rewards(specs: tuple[RewardSpec, ...] | list[RewardSpec], search_path: str | Path | None = None) -> list[Reward]:
    """The callable reward terms of an objective config."""
    out = []
    for spec in specs:
        if spec.fn:
            fn = load_user_function(spec.fn, search_path)
        elif spec.name == "exact_answer":
            fn = exact_answer
        elif spec.name == "regex":
            fn = _regex(spec.pattern or "")
        elif spec.name == "length":
            fn = _length(int(spec.target or 1))
        elif spec.name == "format":
            fn = _format(spec.pattern)
        else:
            raise ConfigError(f"reward {spec.label!r} is not known", "Use a built-in name or fn: 'module:function'.")
        out.append(Reward(spec.label, spec.weight, fn))
    return out


def score(rewards: list[Reward], prompt: str, completions: list[str], record: dict[str, Any],
          where: str) -> tuple[list[float], dict[str, list[float]]]:
    """Weighted total per completion, and each term's raw values (by label) for the events."""
    per_term = {r.label: [r(prompt, c, record, where) for c in completions] for r in rewards}
    totals = [sum(r.weight * per_term[r.label][i] for r in rewards) for i in range(len(completions))]
    return totals, per_term
