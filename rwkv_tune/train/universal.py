"""AdamW's moments across rank counts through DeepSpeed's universal checkpoint format.

`ds_to_universal` turns the ZeRO shards written by N ranks into one folder per parameter name
(`zero/<name>/exp_avg.pt`, `exp_avg_sq.pt`, `step.pt`, `fp32.pt`); from there a single process
(torch AdamW) picks up each parameter's moments by name. Used when a DeepSpeed checkpoint resumes
in one process; other rank changes restart the moments (the trainer says so).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch


def convert_to_universal(shards: Path, out: Path) -> None:
    """Run DeepSpeed's converter on a checkpoint's `deepspeed/state` shards (a subprocess: it uses worker pools)."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(shards),
           "--output_folder", str(out), "--num_extract_workers", "1", "--num_merge_workers", "1",
           "--inject_missing_state"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not (out / "zero").is_dir():
        raise RuntimeError(f"ds_to_universal failed: {(done.stderr or done.stdout)[-500:]}")


def load_universal_moments(universal: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Put each trainable parameter's AdamW state from a universal folder into a torch AdamW; returns the count."""
    names = {id(p): name for name, p in model.named_parameters()}
    loaded = 0
    for group in optimizer.param_groups:
        for param in group["params"]:
            folder = universal / "zero" / names[id(param)]
            if not folder.is_dir():
                raise KeyError(f"no moments for {names[id(param)]} in {universal}")
            state: dict[str, Any] = {"step": torch.tensor(float(_read(folder / "step.pt")))}
            for key in ("exp_avg", "exp_avg_sq"):
                value = _read(folder / f"{key}.pt")
                state[key] = value.reshape(param.shape).to(device=param.device, dtype=torch.float32).clone()
            optimizer.state[param] = state
            loaded += 1
    return loaded


def _read(path: Path) -> Any:
    value = torch.load(path, map_location="cpu", weights_only=True)
    return value["param"] if isinstance(value, dict) else value
