"""`ObjectiveConfig`: the preset's `objective:` section as a validated dataclass (torch-free).

    objective:
      type: sft | dpo | orpo | grpo       # sft (today's next-token training) is the default
      beta: 0.1                           # dpo / orpo strength
      group_size: 8                       # grpo: completions per prompt
      max_new_tokens: 256
      temperature: 1.0
      top_p: 1.0
      kl_beta: 0.04                       # grpo: KL to the reference policy
      clip_eps: 0.2
      rewards: [exact_answer, {fn: "my_rewards:score", weight: 0.5}]

Validation collects every mistake and raises one ConfigError that lists them all.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any

from rwkv_tune.errors import ConfigError

OBJECTIVES = ("sft", "dpo", "orpo", "grpo")
BUILTIN_REWARDS = ("exact_answer", "regex", "length", "format")
# The data each objective reads (data.type): sft reads what it reads today.
DATA_TYPES = {"dpo": ("pairs",), "orpo": ("pairs",), "grpo": ("prompts",)}
_REWARD_KEYS = ("name", "fn", "weight", "pattern", "target")


@dataclass(frozen=True)
class RewardSpec:
    """One reward term: a built-in `name` or a user `fn` ("module:function"), its weight and settings."""

    name: str | None = None
    fn: str | None = None
    weight: float = 1.0
    pattern: str | None = None  # regex / format
    target: int | None = None  # length: the wanted completion length in characters

    @property
    def label(self) -> str:
        """How events and messages name this term."""
        return self.fn or self.name or "?"

    def to_dict(self) -> dict[str, Any] | str:
        out = {k: getattr(self, k) for k in _REWARD_KEYS if getattr(self, k) is not None}
        if out.get("weight") == 1.0:
            out.pop("weight")
        return out["name"] if list(out) == ["name"] else out


@dataclass
class ObjectiveConfig:
    """What the training optimises: next-token SFT, a preference loss (DPO, ORPO) or GRPO."""

    type: str = "sft"
    beta: float = 0.1
    group_size: int = 8
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    kl_beta: float = 0.04
    clip_eps: float = 0.2
    rewards: tuple[RewardSpec, ...] = field(default_factory=tuple)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | str | None) -> ObjectiveConfig:
        """Validate an `objective:` section (or a bare type name); one ConfigError lists every problem."""
        if raw is None:
            raw = {}
        if isinstance(raw, str):
            raw = {"type": raw}
        if not isinstance(raw, dict):
            raise ConfigError(f"objective = {raw!r} is not a mapping", "Write e.g. objective: {type: dpo, beta: 0.1}.")
        problems: list[str] = []
        known = [f.name for f in fields(cls)]
        for key in raw:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                problems.append(f"objective.{key} is not an objective setting"
                                + (f" (did you mean '{close[0]}'?)" if close else f" (use: {', '.join(known)})"))
        values = {k: v for k, v in raw.items() if k in known and v is not None}
        kind = str(values.get("type", "sft")).strip().lower()
        if kind not in OBJECTIVES:
            close = difflib.get_close_matches(kind, OBJECTIVES, n=1)
            problems.append(f"objective.type = {kind!r} is not an objective"
                            + (f" (did you mean '{close[0]}'?)" if close else f" (use one of: {', '.join(OBJECTIVES)})"))
        values["type"] = kind
        numbers = {"beta": (float, 0.0, False), "group_size": (int, 2, True), "max_new_tokens": (int, 1, True),
                   "temperature": (float, 0.0, False), "top_p": (float, 0.0, False), "kl_beta": (float, 0.0, True),
                   "clip_eps": (float, 0.0, False)}
        for key, (kind_of, low, inclusive) in numbers.items():
            if key not in values:
                continue
            value = values[key]
            ok_type = isinstance(value, (int, float)) and not isinstance(value, bool)
            if kind_of is int:
                ok_type = ok_type and float(value).is_integer()
            if not ok_type or not math.isfinite(float(value)):
                problems.append(f"objective.{key} = {value!r} is not {'a whole number' if kind_of is int else 'a number'}")
                continue
            value = kind_of(value)
            if value < low or (value == low and not inclusive):
                problems.append(f"objective.{key} = {value!r} must be {'≥' if inclusive else '>'} {low}")
            values[key] = value
        if isinstance(values.get("top_p"), float) and values["top_p"] > 1:
            problems.append(f"objective.top_p = {values['top_p']!r} must be ≤ 1")
        values["rewards"] = tuple(_reward_specs(values.get("rewards", ()), problems))
        if kind == "grpo" and not values["rewards"] and not any("rewards" in p for p in problems):
            problems.append("objective.type = grpo needs at least one reward (objective.rewards is empty)")
        if problems:
            raise ConfigError("the objective section has " + (f"{len(problems)} problems: " if len(problems) > 1
                                                              else "a problem: ") + "; ".join(problems),
                              "Fix these keys in the preset's objective: section.")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The preset form: every key, rewards in their short form."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["rewards"] = [r.to_dict() for r in self.rewards]
        return out

    def check_data_type(self, data_type: str) -> None:
        """Refuse data that this objective cannot read (pairs for dpo/orpo, prompts for grpo)."""
        wanted = DATA_TYPES.get(self.type)
        if wanted and data_type not in wanted and data_type != "auto":
            raise ConfigError(f"objective.type = {self.type} reads {' or '.join(wanted)} data, but data.type is "
                              f"{data_type!r}", f"Use data.type: {wanted[0]} (or auto) with a "
                              f"{'prompt/chosen/rejected' if wanted[0] == 'pairs' else 'prompt/answer'} jsonl file.")


def _reward_specs(raw: Any, problems: list[str]) -> list[RewardSpec]:
    if isinstance(raw, (str, dict)):
        raw = [raw]
    if not isinstance(raw, (list, tuple)):
        problems.append(f"objective.rewards = {raw!r} is not a list")
        return []
    specs = []
    for i, item in enumerate(raw):
        where = f"objective.rewards[{i}]"
        if isinstance(item, str):
            item = {"fn": item} if ":" in item else {"name": item}
        if not isinstance(item, dict):
            problems.append(f"{where} = {item!r} is neither a reward name nor a mapping")
            continue
        unknown = [k for k in item if k not in _REWARD_KEYS]
        if unknown:
            problems.append(f"{where} has unknown key {unknown[0]!r} (use: {', '.join(_REWARD_KEYS)})")
            continue
        name, fn = item.get("name"), item.get("fn")
        if (name is None) == (fn is None):
            problems.append(f"{where} needs exactly one of name (a built-in: {', '.join(BUILTIN_REWARDS)}) "
                            "or fn ('module:function')")
            continue
        if name is not None and name not in BUILTIN_REWARDS:
            close = difflib.get_close_matches(str(name), BUILTIN_REWARDS, n=1)
            problems.append(f"{where}: {name!r} is not a built-in reward"
                            + (f" (did you mean '{close[0]}'?)" if close else f" (use: {', '.join(BUILTIN_REWARDS)})"))
            continue
        if fn is not None and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", str(fn)):
            problems.append(f"{where}: fn = {fn!r} is not 'module:function' (e.g. 'my_rewards:score')")
            continue
        weight = item.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            problems.append(f"{where}: weight = {weight!r} is not a number")
            continue
        pattern = item.get("pattern")
        if name == "regex" and pattern is None:
            problems.append(f"{where}: the regex reward needs a pattern (e.g. pattern: '\\\\d+$')")
            continue
        if pattern is not None:
            try:
                re.compile(str(pattern))
            except re.error as exc:
                problems.append(f"{where}: pattern {pattern!r} is not a regular expression ({exc})")
                continue
        target = item.get("target")
        if name == "length" and (isinstance(target, bool) or not isinstance(target, int) or target < 1):
            problems.append(f"{where}: the length reward needs target: N (characters, ≥ 1), got {target!r}")
            continue
        specs.append(RewardSpec(name=name, fn=fn, weight=float(weight),
                                pattern=None if pattern is None else str(pattern), target=target))
    return specs
