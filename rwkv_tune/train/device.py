"""Where a run executes and what its optimizer sees: device choice, seeding, memory readings, AdamW groups."""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

from rwkv_tune.errors import ConfigError
from rwkv_tune.preset import Preset


def pick_device(preset: Preset) -> torch.device:
    want = preset.train.device
    if want == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if want.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device = {want} but no CUDA GPU is visible", "Use train.device: cpu (or auto).")
    return torch.device(want)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def memory_stats(device: torch.device) -> dict[str, float]:
    if device.type == "cuda":
        return {"gpu_allocated_gib": torch.cuda.memory_allocated(device) / 2**30,
                "gpu_reserved_gib": torch.cuda.memory_reserved(device) / 2**30,
                "gpu_peak_gib": torch.cuda.max_memory_reserved(device) / 2**30}
    try:
        with open("/proc/self/statm") as f:
            rss_pages = int(f.read().split()[1])
        return {"cpu_rss_gib": rss_pages * os.sysconf("SC_PAGE_SIZE") / 2**30}
    except (OSError, ValueError):
        return {}


def optimizer_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay only on ≥2-D Linear/emb/head weights; v7 w0 at 2× lr (as the official trainer)."""
    decay, no_decay, double = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.endswith("att.w0"):
            double.append(p)
        elif weight_decay > 0 and name.endswith("weight") and p.squeeze().ndim >= 2:
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [{"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0}]
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay, "lr_scale": 1.0})
    if double:
        groups.append({"params": double, "weight_decay": 0.0, "lr_scale": 2.0})
    return [g for g in groups if g["params"]]
