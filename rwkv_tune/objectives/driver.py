"""A small training driver for objectives: AdamW over the trainable parameters, save and exact resume.

It is what the tests and examples run until the Trainer takes `objective.type`; the Trainer's own
loop will call the same three things (`batches`, `loss`, `state_dict`). A checkpoint folder holds:
    adapter.safetensors   the PEFT method's trainable weights
    objective.pt          optimizer state, step, and the objective's cursor and sampler RNG
    complete              written last; the folder is renamed into place, so it is whole or absent
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rwkv_tune.errors import UserError
from rwkv_tune.objectives.base import Objective


class ObjectiveDriver:
    """Runs an objective's steps on a PEFT-applied model; `save`/`resume` round-trip exactly."""

    def __init__(self, model: torch.nn.Module, objective: Objective, *, lr: float = 1e-3, grad_clip: float = 1.0,
                 weight_decay: float = 0.0):
        self.model, self.objective = model, objective
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        if not self.trainable:
            raise UserError("the model has no trainable parameters", "Apply a PEFT method before training.")
        self.optimizer = torch.optim.AdamW(self.trainable, lr=lr, weight_decay=weight_decay)
        self.grad_clip = grad_clip
        self.step = 0
        self._batches = None

    def train_step(self) -> dict[str, float]:
        """One batch → loss → backward → clip → AdamW step; returns the step's fields (loss included)."""
        if self._batches is None:
            self._batches = self.objective.batches(self.model)
        self.model.train()
        batch = next(self._batches)
        loss, fields = self.objective.loss(self.model, batch)
        if not math.isfinite(float(loss.detach())):
            raise UserError(f"step {self.step + 1}: the {self.objective.name} loss is {float(loss)}",
                            "Lower the learning rate or objective.beta.")
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.trainable, self.grad_clip or float("inf")))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {"step": self.step, "loss": float(loss.detach()), "grad_norm": grad_norm, **fields}

    def run(self, steps: int, on_step: Callable[[dict[str, float]], Any] | None = None) -> list[dict[str, float]]:
        """`steps` more steps; `on_step(fields)` after each (return True from it to stop early)."""
        history = []
        for _ in range(steps):
            fields = self.train_step()
            history.append(fields)
            if on_step is not None and on_step(fields):
                break
        return history

    def save(self, folder: str | Path) -> Path:
        """Write the checkpoint folder whole or not at all (temp folder, `complete` marker, rename)."""
        import os
        import shutil

        from rwkv_tune import peft

        folder = Path(folder)
        tmp = folder.with_name(f".{folder.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        peft.save_adapter(self.model, tmp / "adapter.safetensors")
        torch.save({"optimizer": self.optimizer.state_dict(), "step": self.step,
                    "objective": self.objective.state_dict()}, tmp / "objective.pt")
        (tmp / "complete").write_text(str(self.step))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        return folder

    def resume(self, folder: str | Path) -> None:
        """Load a `save` folder into this driver (its model has the same method applied, objective built)."""
        from rwkv_tune import peft

        folder = Path(folder)
        if not (folder / "complete").exists():
            raise UserError(f"checkpoint {folder} is incomplete or missing (no 'complete' marker)",
                            "Resume from a complete checkpoint folder.")
        peft.load_adapter(self.model, folder / "adapter.safetensors")
        state = torch.load(folder / "objective.pt", map_location="cpu", weights_only=True)  # nothing in it runs
        self.optimizer.load_state_dict(state["optimizer"])
        self.objective.load_state_dict(state["objective"])
        self.step = int(state["step"])
        self._batches = None


def run_objective(model_path: str | Path, data_path: str | Path, out_dir: str | Path, *,
                  objective: dict[str, Any] | str, method: dict[str, Any] | str = "lora", steps: int = 100,
                  lr: float = 1e-4, batch_size: int = 4, seed: int = 0, save_every: int = 0,
                  resume: str | Path | None = None) -> ObjectiveDriver:
    """Train `steps` steps of DPO/ORPO/GRPO from files into a run directory (fp32, the model's device).

    Writes metrics.jsonl (`step` events carrying the objective's fields), rollouts.jsonl (GRPO),
    checkpoints/step-N/ (adapter + objective.pt) every `save_every` steps and at the end, and
    adapter.safetensors. Rewards' 'module:function' are imported from the data file's folder first.
    """
    import time

    from rwkv_tune import peft
    from rwkv_tune.model import load_model
    from rwkv_tune.objectives.config import ObjectiveConfig
    from rwkv_tune.objectives.factory import build_objective
    from rwkv_tune.runs import EventWriter, RunDir

    cfg = ObjectiveConfig.from_dict(objective)
    run = RunDir(Path(out_dir))
    torch.manual_seed(seed)
    model = load_model(model_path, dtype=torch.float32)
    peft.apply(model, method if isinstance(method, dict) else {"name": method})
    built = build_objective(cfg, model, data_path, batch_size=batch_size, seed=seed, run_dir=run.root,
                            search_path=Path(data_path).resolve().parent)
    driver = ObjectiveDriver(model, built, lr=lr)
    if resume is not None:
        driver.resume(resume)
    started = time.time()
    with EventWriter(run.metrics) as events:
        def save() -> None:
            path = driver.save(run.checkpoint(driver.step))
            peft.save_adapter(model, run.adapter)
            events.emit("checkpoint", step=driver.step, epoch=0, path=str(path))

        def on_step(fields: dict[str, float]) -> None:
            events.emit("step", objective=cfg.type, epoch=0, elapsed_s=time.time() - started, **fields)
            if save_every and driver.step % save_every == 0:
                save()

        driver.run(steps, on_step=on_step)
        if not (run.checkpoint(driver.step) / "objective.pt").exists():
            save()
        events.emit("done", step=driver.step, reason="finished", adapter=str(run.adapter), merged=None)
    return driver
