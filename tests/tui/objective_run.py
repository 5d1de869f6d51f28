"""A scripted GRPO or DPO run: ScriptedRun's events plus the objective's step fields, evals and rollouts.jsonl."""

from __future__ import annotations

import json
import math

from scripted_run import ScriptedRun


class ObjectiveRun(ScriptedRun):
    """Deterministic objective events (seeded), for the dashboard's objective panels."""

    def __init__(self, run_dir, objective: str, **kwargs):
        super().__init__(run_dir, **kwargs)
        self.objective = objective
        self.group = 0

    def start(self, *, resumed_from_step=None):
        record = super().start(resumed_from_step=resumed_from_step)
        record["preset"]["objective"] = {"type": self.objective}
        with open(self.path, encoding="utf-8") as f:  # rewrite the run_start line with the objective in its preset
            lines = f.read().splitlines()
        lines[-1] = json.dumps(record)
        self.path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return record

    def fields(self) -> dict:
        s, noise = self.step, 0.1 * (self.rng.random() - 0.5)
        if self.objective == "grpo":
            correct = min(1.0, max(0.0, 1 - math.exp(-s / 60) + noise))
            form = min(1.0, max(0.0, 0.5 + s / 400 + noise))
            return {"reward_mean": round(correct + 0.5 * form, 4), "reward_std": 0.3, "kl": round(0.002 * s, 4),
                    "clip_fraction": 0.01, "completion_length": 42.0,
                    "reward/exact_answer/mean": round(correct, 4), "reward/exact_answer/std": 0.4,
                    "reward/format/mean": round(form, 4), "reward/format/std": 0.2}
        margin = 3 * (1 - math.exp(-s / 50)) + noise
        return {"reward_margin": round(margin, 4), "reward_chosen": round(margin / 2, 4),
                "reward_rejected": round(-margin / 2, 4), "pref_accuracy": round(min(1.0, 0.5 + s / 200), 4)}

    def objective_steps(self, n: int) -> None:
        for _ in range(n):
            self.step += 1
            self.elapsed += 2.0
            self.emit("step", step=self.step, epoch=(self.step - 1) // self.epoch_steps, loss=round(0.7 - s_(self), 4),
                      lr=2e-5, tokens=self.step * 4096, tokens_per_s=2048.0, elapsed_s=round(self.elapsed, 3),
                      grad_norm=0.5, mem={"gpu_allocated_gib": 5.0, "gpu_reserved_gib": 6.0, "estimate_gib": 6.5},
                      skipped=0, **self.fields())
            if self.objective == "grpo":
                self.group += 1
                line = {"group": self.group, "index": self.step % 7, "prompt": f"What is {self.step} + 1?",
                        "completions": [f"<answer>{self.step + 1}</answer>", "I think 7", f"{self.step + 1}"],
                        "rewards": [1.5, 0.0, 1.0], "terms": {}, "advantages": [1.0, -1.0, 0.0]}
                with open(self.root / "rollouts.jsonl", "a", encoding="utf-8") as f:
                    f.write(json.dumps(line) + "\n")

    def pair_eval(self) -> None:
        self.emit("eval", step=self.step, loss=0.3, **self.fields())


def s_(run: ScriptedRun) -> float:
    return 0.5 * (1 - math.exp(-run.step / 80))
