"""Where the files shipped inside the package live: CUDA sources (kernels/) and presets (presets/)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def kernels_dir() -> Path:
    """The folder with the CUDA kernel sources (the repository's kernels/, installed as rwkv_tune.kernels)."""
    return Path(str(files("rwkv_tune.kernels")))


def presets_dir() -> Path:
    """The folder with the shipped preset YAML files (the repository's presets/)."""
    return Path(str(files("rwkv_tune.presets")))
