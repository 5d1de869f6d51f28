"""Before a trainer writes into its run directory: take the lock, and refuse to mix two runs in it.

    train on a fresh output.dir          → a new run
    train on an existing run             → refused: --resume auto continues it, --restart archives it
    train --resume (auto | PATH)         → the preset is checked against the run's (resume_check)
    train --restart                      → the old run's files move to archive/<timestamp>/, a new run
Only rank 0 does any of this; other ranks never touch the run directory's lock. Torch-free (the CLI
checks the same rules before it starts a dashboard or several ranks).
"""

from __future__ import annotations

import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from rwkv_tune.errors import ConfigError, UserError
from rwkv_tune.preset import Preset
from rwkv_tune.runs import RunDir, read_events
from rwkv_tune.train.resume_check import check_checkpoint_of_run, check_resume_preset
from rwkv_tune.train.run_lock import LOCK_NAME, RunLock

ARCHIVE = "archive"


@dataclass
class RunClaim:
    """What rank 0 holds while it writes a run: the lock, the run's id, and warnings for the event stream."""

    lock: RunLock | None
    run_id: str
    warnings: list[str] = field(default_factory=list)

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> RunClaim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def existing_run_id(run: RunDir) -> str | None:
    """The id of the run in this directory ('' for a run from before run ids), None when there is none."""
    starts = [e for e in read_events(run.metrics) if e.get("event") == "run_start"]
    if starts:
        return str(starts[-1].get("run_id") or "")
    return "" if run.list_checkpoints() else None


def archive_run(run: RunDir) -> Path:
    """Move every file of the run (not the lock, not older archives) into archive/<timestamp>/."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = run.root / ARCHIVE / stamp
    n = 1
    while target.exists():
        n += 1
        target = run.root / ARCHIVE / f"{stamp}-{n}"
    target.mkdir(parents=True)
    for item in sorted(run.root.iterdir()):
        if item.name not in (LOCK_NAME, ARCHIVE):
            shutil.move(str(item), str(target / item.name))
    return target


def claim_run(preset: Preset, *, resume: str | None = None, restart: bool = False, rank: int = 0,
              check_checkpoint: bool = True) -> RunClaim:
    """Lock the run directory (rank 0) and apply the rules above; the caller releases the claim."""
    if resume and restart:
        raise ConfigError(f"--resume {resume} and --restart both given",
                          "Use --resume auto to continue the run, or --restart to archive it and start over.")
    if rank != 0:
        return RunClaim(None, "")
    run = RunDir(Path(preset.output.dir))
    lock = RunLock(run.root).acquire()
    try:
        claim = RunClaim(lock, "")
        previous = existing_run_id(run)
        if previous is not None and not resume:
            if not restart:
                raise UserError(f"{run.root} already holds a run ({_describe(run)}); training again would append a "
                                "second run to it",
                                "Continue it with --resume auto, start over with --restart (the old run is moved "
                                f"to {run.root / ARCHIVE}/), or set a new output.dir.")
            claim.warnings.append(f"--restart: the previous run was archived to {archive_run(run)}")
            previous = None
        checkpoint = run.latest_checkpoint() if resume == "auto" else Path(resume) if resume else None
        if checkpoint is not None:
            if resume != "auto" and check_checkpoint:
                check_checkpoint_of_run(run, checkpoint, previous)
            allowed = check_resume_preset(run, preset)
            if allowed:
                claim.warnings.append("resumed with changed settings: " + "; ".join(allowed))
        claim.run_id = previous or uuid.uuid4().hex[:12]
        return claim
    except BaseException:
        lock.release()
        raise


def check_run_dir(preset: Preset, *, resume: str | None = None, restart: bool = False) -> None:
    """The same rules, checked (and --restart's archive done) by a parent before it starts the trainer
    process(es), which then claim the directory themselves."""
    claim_run(preset, resume=resume, restart=restart, check_checkpoint=False).release()


def _describe(run: RunDir) -> str:
    events = read_events(run.metrics)
    done = [e for e in events if e.get("event") == "done"]
    steps = [e["step"] for e in events if e.get("event") == "step" and "step" in e]
    latest = run.latest_checkpoint()
    state = f"{done[-1].get('reason', 'done')} at step {done[-1].get('step')}" if done else \
        f"stopped at step {steps[-1]}" if steps else "no steps yet"
    return state + (f", latest checkpoint {latest.name}" if latest else "")
