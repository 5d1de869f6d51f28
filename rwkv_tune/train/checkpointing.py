"""Resumable checkpoints: one folder per save, written to a temp folder and renamed when complete.

    checkpoints/step-00000120/
      adapter.safetensors   the trainable weights as the PEFT method saves them (self-describing)
      trainer.pt            optimizer, step/epoch counters, data cursor, RNG states, counters
      complete              marker: written last, so a folder without it is ignored
A crash (or a full disk) mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rwkv_tune.checkpoint import atomic_path
from rwkv_tune.errors import ResourceError, UserError
from rwkv_tune.runs import RunDir


def rng_state() -> dict[str, Any]:
    """Every RNG's state in plain types and tensors (numpy's key array as a list), so it loads weights_only."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)]
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run: RunDir, step: int, write_adapter: Any, trainer_state: dict[str, Any], *,
                    keep_last: int) -> Path:
    """Write checkpoints/step-N atomically; `write_adapter(path)` writes the adapter file.

    A full disk raises `ResourceError` (exit code 3) and leaves the previous checkpoint intact.
    """
    try:
        return _save_checkpoint(run, step, write_adapter, trainer_state, keep_last=keep_last)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        last = run.latest_checkpoint()
        raise ResourceError(f"disk full while saving the checkpoint of step {step} under {run.checkpoints}; "
                            f"the previous checkpoint ({last.name if last else 'none'}) is intact",
                            "Free some space and continue with --resume auto.") from None


def _save_checkpoint(run: RunDir, step: int, write_adapter: Any, trainer_state: dict[str, Any], *,
                     keep_last: int) -> Path:
    final = run.checkpoint(step)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write_adapter(tmp / "adapter.safetensors")
        torch.save(trainer_state, tmp / "trainer.pt")
        (tmp / "complete").write_text(str(step))
        for name in ("adapter.safetensors", "trainer.pt", "complete"):
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with atomic_path(run.adapter) as out:
        shutil.copyfile(final / "adapter.safetensors", out)
    for old in run.list_checkpoints()[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_trainer_state(checkpoint: Path) -> dict[str, Any]:
    """The trainer state of a complete checkpoint, read with weights_only=True: a folder from elsewhere
    cannot run code (only tensors, numbers, strings, lists, tuples and dicts load)."""
    import pickle

    try:
        return torch.load(checkpoint / "trainer.pt", map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise UserError(f"{checkpoint / 'trainer.pt'} is not a trainer state rwkv-tune wrote (refused unread: "
                        f"{str(exc).splitlines()[0][:160]})",
                        "Resume from a checkpoint this tool saved (--resume auto), or start over with --restart.") \
            from None
