"""Resumable checkpoints: one folder per save, written to a temp folder and renamed when complete.

    checkpoints/step-00000120/
      adapter.safetensors   the trainable weights as the PEFT method saves them (self-describing)
      trainer.pt            optimizer, step/epoch counters, data cursor, RNG states, counters
      deepspeed/            DeepSpeed runs: each rank's ZeRO shards (fp32 masters, AdamW moments), world size in trainer.pt
      complete              marker: written last, so a folder without it is ignored
A crash (or a full disk, or SIGKILL) mid-save leaves the previous checkpoint intact: everything, the
ranks' shards included, is written into `.step-N.tmp/` and renamed into place together.
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


DEEPSPEED_DIR = "deepspeed"


def staging_folder(run: RunDir, step: int) -> Path:
    """Where checkpoint `step` is assembled before it is renamed into place."""
    final = run.checkpoint(step)
    return final.with_name(f".{final.name}.tmp")


def new_staging_folder(run: RunDir, step: int) -> Path:
    """An empty staging folder (a leftover from a killed save is dropped)."""
    tmp = staging_folder(run, step)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def save_checkpoint(run: RunDir, step: int, write_adapter: Any, trainer_state: dict[str, Any], *,
                    keep_last: int, staged: bool = False) -> Path:
    """Write checkpoints/step-N atomically; `write_adapter(path)` writes the adapter file.

    With `staged`, the staging folder already holds other writers' files (DeepSpeed shards) and is kept.
    A full disk raises `ResourceError` (exit code 3) and leaves the previous checkpoint intact.
    """
    try:
        return _save_checkpoint(run, step, write_adapter, trainer_state, keep_last=keep_last, staged=staged)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        last = run.latest_checkpoint()
        raise ResourceError(f"disk full while saving the checkpoint of step {step} under {run.checkpoints}; "
                            f"the previous checkpoint ({last.name if last else 'none'}) is intact",
                            "Free some space and continue with --resume auto.") from None


def _save_checkpoint(run: RunDir, step: int, write_adapter: Any, trainer_state: dict[str, Any], *,
                     keep_last: int, staged: bool) -> Path:
    final = run.checkpoint(step)
    tmp = staging_folder(run, step) if staged else new_staging_folder(run, step)
    try:
        write_adapter(tmp / "adapter.safetensors")
        torch.save(trainer_state, tmp / "trainer.pt")
        (tmp / "complete").write_text(str(step))
        _fsync_tree(tmp)
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


def resume_checkpoint(run: RunDir, resume: str) -> Path | None:
    """The checkpoint `--resume` names: a folder, or `auto` (the run's latest complete one; None if there is none)."""
    checkpoint = Path(resume) if resume != "auto" else run.latest_checkpoint()
    if checkpoint is not None and not (checkpoint / "complete").exists():
        raise UserError(f"checkpoint {checkpoint} is incomplete (no 'complete' marker)",
                        "Resume from an earlier one under checkpoints/, or use --resume auto.")
    return checkpoint


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


def stage_engine_shards(run: RunDir, step: int, engine: Any, rank: int) -> bool:
    """DeepSpeed: every rank writes its ZeRO shards into checkpoint `step`'s staging folder (rank 0 creates it).

    Returns whether it did (then rank 0 finishes the folder with `save_checkpoint(..., staged=True)`)."""
    if engine is None:
        return False
    if rank == 0:
        new_staging_folder(run, step)
    engine.barrier()
    engine.save_shards(staging_folder(run, step) / DEEPSPEED_DIR)
    return True


def restore_optimizer(checkpoint: Path, state: dict[str, Any], optimizer: Any, engine: Any, world_size: int,
                      model: Any, param_names: list[str]) -> str | None:
    """AdamW's moments: ours (one process), DeepSpeed's shards (same rank count; this also puts the weights into
    ZeRO's fp32 masters), DeepSpeed's shards in one process through the universal checkpoint format, or a
    one-process checkpoint's moments sliced into ZeRO-1/2's partitions. Otherwise they restart; returns the
    warning that says so. `param_names`: the trainable parameters in the optimizer's order."""
    saved_world = int(state.get("world_size", 1))
    shards = checkpoint / DEEPSPEED_DIR
    if engine is None and state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
        return None
    if engine is not None and shards.is_dir() and saved_world == world_size:
        engine.load_shards(shards)
        return None
    if engine is not None and state["optimizer"] is not None:
        moments = {param_names[i]: s for i, s in state["optimizer"]["state"].items()}
        step = int(next(iter(moments.values()))["step"]) if moments else 0  # AdamW's own count (skips excluded)
        if moments and engine.set_moments(model, moments, step=step):
            return None
    if engine is None and (shards / "state").is_dir():
        from rwkv_tune.train.universal import convert_to_universal, load_universal_moments

        universal = checkpoint.parent / f".{checkpoint.name}.universal.tmp"
        try:
            convert_to_universal(shards / "state", universal)
            load_universal_moments(universal, model, optimizer)
            return None
        except (RuntimeError, KeyError, OSError) as exc:
            optimizer.state.clear()
            reason = f" ({exc})"
        finally:
            shutil.rmtree(universal, ignore_errors=True)
        return (f"resuming in one process a checkpoint written by {saved_world} ranks: weights, step, schedule and "
                f"data position are restored; AdamW's moments restart from zero: DeepSpeed's universal conversion "
                f"failed{reason}")
    return (f"resuming on {world_size} rank(s) a checkpoint written by {saved_world}: weights, step, schedule and "
            "data position are restored; AdamW's moments restart from zero")
