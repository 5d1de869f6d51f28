"""A scripted run: deterministic events appended to a metrics.jsonl, for the dashboard tests and screenshots.

Fixed times and values (no clock, seeded noise), so what the dashboard shows is reproducible.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC


class ScriptedRun:
    """Appends a fake but plausible run's events to `<run_dir>/metrics.jsonl`, one flushed line each."""

    def __init__(self, run_dir: Path | str, *, total_steps: int = 400, epoch_steps: int = 100,
                 tokens_per_step: int = 8192, tokens_per_s: float = 2048.0, gpu: bool = True,
                 merge: bool = False, seed: int = 0):
        self.root = Path(run_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / "metrics.jsonl"
        self.total_steps, self.epoch_steps = total_steps, epoch_steps
        self.tokens_per_step, self.tokens_per_s = tokens_per_step, tokens_per_s
        self.gpu, self.merge = gpu, merge
        self.step = 0
        self.elapsed = 0.0
        self.rng = random.Random(seed)

    @property
    def now(self) -> float:
        return round(T0 + self.elapsed, 3)

    def emit(self, event: str, **payload: Any) -> dict[str, Any]:
        record = {"event": event, "time": self.now, "v": 1, **payload}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return record

    def start(self, *, resumed_from_step: int | None = None) -> dict[str, Any]:
        if resumed_from_step is not None:
            self.step = resumed_from_step
        plan = {"total_steps": self.total_steps, "epoch_steps": self.epoch_steps,
                "epoch_count": math.ceil(self.total_steps / self.epoch_steps),
                "tokens_per_step": self.tokens_per_step, "total_tokens": self.total_steps * self.tokens_per_step,
                "trainable_params": 1_572_864, "total_params": 191_034_624, "passes_over_data": 1.6}
        spec = {"version": 7, "arch": "x070", "size_name": "0.1B", "n_layer": 12, "n_embd": 768,
                "n_head": 12, "head_size": 64, "vocab_size": 65536}
        preset = {"model": {"path": "models/rwkv7-g1-0.1b.pth"},
                  "method": {"name": "lora", "r": 32, "alpha": 32.0}, "quant": "none",
                  "train": {"devices": 1, "nodes": 1, "device": "cuda" if self.gpu else "cpu"},
                  "output": {"dir": "runs/demo", "merge": self.merge}}
        return self.emit("run_start", run="runs/demo", preset=preset, plan=plan, spec=spec,
                         resumed_from_step=resumed_from_step, preset_path="presets/demo.yaml",
                         devices="1× NVIDIA H100 80GB" if self.gpu else "cpu")

    def loss_at(self, step: int) -> float:
        return 1.9 + 1.6 * math.exp(-step / 90) + 0.18 * (self.rng.random() - 0.5) + 0.05 * math.sin(step / 7)

    def steps(self, n: int, *, tokens_per_s: float | None = None, loss: float | None = None) -> None:
        rate = tokens_per_s or self.tokens_per_s
        for _ in range(n):
            self.step += 1
            self.elapsed += self.tokens_per_step / rate
            mem = ({"gpu_allocated_gib": 5.21, "gpu_reserved_gib": 6.08, "estimate_gib": 6.5, "cpu_rss_gib": 2.4}
                   if self.gpu else {"gpu_allocated_gib": None, "gpu_reserved_gib": None, "estimate_gib": None,
                                     "cpu_rss_gib": 1.37})
            self.emit("step", step=self.step, epoch=(self.step - 1) // self.epoch_steps,
                      loss=self.loss_at(self.step) if loss is None else loss,
                      lr=2e-4 * (0.5 + 0.5 * math.cos(math.pi * self.step / self.total_steps)),
                      tokens=self.step * self.tokens_per_step, tokens_per_s=rate, elapsed_s=round(self.elapsed, 3),
                      grad_norm=round(0.6 + 0.4 * math.exp(-self.step / 120), 4), mem=mem, skipped=0)

    def eval(self, loss: float | None = None) -> None:
        value = loss if loss is not None else 1.95 + 1.5 * math.exp(-self.step / 90)
        self.emit("eval", step=self.step, loss=round(value, 4), ppl=round(math.exp(value), 3))

    def checkpoint(self) -> None:
        self.emit("checkpoint", step=self.step, epoch=(self.step - 1) // self.epoch_steps,
                  path=f"runs/demo/checkpoints/step-{self.step:08d}")

    def sample(self, prompt: str = "The river", text: str = " ran down to the sea, carrying the old boats.") -> None:
        self.emit("sample", step=self.step, prompt=prompt, text=text)

    def warning(self, message: str) -> None:
        self.emit("warning", message=message)

    def done(self, reason: str = "finished", merged: str | None = None) -> None:
        self.emit("done", step=self.step, reason=reason, adapter="runs/demo/adapter.safetensors", merged=merged)
