"""rollouts.jsonl in the run directory: one line per sampled group (prompt, completions, rewards).

    {"step": 12, "prompt": "…", "index": 3, "completions": ["…", …], "rewards": [1.0, …],
     "terms": {"exact_answer": [1.0, …]}, "advantages": [0.9, …]}
Appended and flushed per group, so a crash loses at most the line being written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROLLOUTS_FILE = "rollouts.jsonl"


class RolloutWriter:
    """Appends one JSON line per group to `path` (created with its folder)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **line: Any) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
            f.flush()


def read_rollouts(path: str | Path) -> list[dict[str, Any]]:
    """Every line of a rollouts.jsonl (a torn last line is skipped)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
