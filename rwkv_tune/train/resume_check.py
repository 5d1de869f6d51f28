"""What a resume may change: the preset against the run's resolved preset.yaml, and whose checkpoint it is.

Changes that break an exact continuation (the method, quant, the data and how it is cut, the global batch,
the seed, the base model) are refused, all listed at once. micro_bsz and the rank count may change
together (an elastic resume) as long as micro_bsz × devices × nodes, the samples per step, stays. Everything else (the schedule: epochs, lr,
warmup, save cadence, samples, evals, outputs) is allowed and reported as a warning event.
Torch-free, except `check_checkpoint_of_run`, which reads the checkpoint's trainer.pt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rwkv_tune.errors import ConfigError, UserError
from rwkv_tune.preset import Preset
from rwkv_tune.runs import RunDir

BREAKING_SECTIONS = ("method", "quant", "objective")
BREAKING_KEYS = ("data.path", "data.type", "data.ctx_len", "data.dataload", "data.loss_mask", "data.fields",
                 "data.split", "train.accumulate_grad_batches", "train.seed", "model.path")
IGNORED_KEYS = ("model.spec", "output.dir", "provenance")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name not in IGNORED_KEYS and key not in ("spec",):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _same_file(recorded: Any, now: Any) -> bool:
    """Two fingerprints (rwkv_tune.checkpoint.fingerprint) of the same file name and content, in any folder."""
    if not isinstance(recorded, dict) or not isinstance(now, dict) or recorded.get("missing") or now.get("missing"):
        return False
    return (recorded.get("size"), recorded.get("sha256_head_tail")) == (now.get("size"), now.get("sha256_head_tail"))


def preset_changes(saved: Preset, new: Preset) -> tuple[list[str], list[str]]:
    """(changes that break an exact resume, allowed changes), each as 'key old → new'."""
    from rwkv_tune.checkpoint import fingerprint

    before, after = _flatten(saved.to_dict()), _flatten(new.to_dict())
    breaking, allowed = [], []
    provenance = saved.provenance or {}
    for key in sorted(set(before) | set(after)):
        if key in IGNORED_KEYS or key.startswith(tuple(k + "." for k in IGNORED_KEYS)):
            continue
        old, value = before.get(key), after.get(key)
        if old == value:
            continue
        change = f"{key} {old!r} → {value!r}"
        moved = {"model.path": "base_model", "data.path": "data"}.get(key)
        if moved and provenance.get(moved) and value and _same_file(provenance[moved], fingerprint(value)):
            allowed.append(change + " (same content)")
        elif key in BREAKING_KEYS or key.split(".")[0] in BREAKING_SECTIONS:
            breaking.append(change)
        else:
            allowed.append(change)
    for key, name in (("model.path", "base_model"), ("data.path", "data")):
        path = after.get(key)
        recorded = provenance.get(name)
        if path and before.get(key) == path and isinstance(recorded, dict) and not recorded.get("missing"):
            if not _same_file(recorded, fingerprint(path)):
                breaking.append(f"{key} {path!r}: the file's content changed since the run started")
    samples_before, samples_now = (x.train.micro_bsz * x.train.devices * x.train.nodes for x in (saved, new))
    if samples_before != samples_now:
        breaking.append(f"samples per step (train.micro_bsz × devices × nodes) {samples_before} → {samples_now}")
    return breaking, allowed


def check_resume_preset(run: RunDir, preset: Preset) -> list[str]:
    """Refuse a resume whose preset breaks exactness; return the allowed changes (for a warning event)."""
    if not run.preset.is_file():
        return []
    from rwkv_tune.run_inputs import read_run_preset

    try:
        saved = read_run_preset(run.root)
    except ConfigError as exc:
        raise UserError(f"cannot check this resume against the run's settings: {exc.message}",
                        f"Restore {run.preset} as the run wrote it, or start over with --restart.") from None
    breaking, allowed = preset_changes(saved, preset)
    if breaking:
        raise UserError(f"cannot resume {run.root}: the preset changed in ways that break an exact resume: "
                        + "; ".join(breaking),
                        f"Put them back (the run's settings are in {run.preset}), start over with --restart "
                        "(the old run is archived), or train into a new output.dir.")
    return allowed


def check_checkpoint_of_run(run: RunDir, checkpoint: Path, run_id: str | None) -> None:
    """Refuse `--resume PATH` unless PATH is a complete checkpoint of this run (under its checkpoints/,
    or recording this run's id). trainer.pt is read with weights_only=True: nothing in it runs."""
    checkpoint = Path(checkpoint)
    fix = f"Resume with --resume auto, or pass a folder under {run.checkpoints}/."
    missing = [name for name in ("complete", "adapter.safetensors", "trainer.pt") if not (checkpoint / name).is_file()]
    if not checkpoint.is_dir() or missing:
        what = "it does not exist" if not checkpoint.exists() else "it is not a folder" if not checkpoint.is_dir() \
            else f"no {', '.join(missing)}"
        raise UserError(f"--resume {checkpoint} is not a complete checkpoint ({what})", fix)
    if checkpoint.resolve().parent == run.checkpoints.resolve():
        return
    from rwkv_tune.train.checkpointing import load_trainer_state

    recorded = load_trainer_state(checkpoint).get("run_id")
    if not run_id or recorded != run_id:
        raise UserError(f"--resume {checkpoint} is not a checkpoint of the run in {run.root} (it records run id "
                        f"{recorded or 'none'}, this run is {run_id or 'new'})", fix)
