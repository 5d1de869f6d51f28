"""Training: the loop (`loop.Trainer`), schedules, losses, checkpoints, engines and the launcher.

`run(preset, ...)` trains in this process (one device); `launcher` starts several ranks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rwkv_tune.preset import Preset

if TYPE_CHECKING:
    from rwkv_tune.train.run_guard import RunClaim


def run(preset: Preset, *, resume: str | None = None, echo: Any = None, rank: int = 0, world_size: int = 1,
        engine: Any = None, restart: bool = False, claim: RunClaim | None = None):
    """Train one run to the end (or until stopped); returns `loop.TrainResult`.

    Rank 0 first claims the run directory (`run_guard.claim_run`: the lock, no second run mixed in,
    resume checks) unless the caller passes the `claim` it holds (to keep the lock over a merge too).
    """
    from rwkv_tune.train.run_guard import claim_run

    own_claim = claim is None
    if own_claim:
        claim = claim_run(preset, resume=resume, restart=restart, rank=rank)
    try:
        return _run_claimed(preset, claim, resume=resume, echo=echo, rank=rank, world_size=world_size,
                            engine=engine)
    finally:
        if own_claim:
            claim.release()


def _run_claimed(preset: Preset, claim: RunClaim, *, resume: str | None, echo: Any, rank: int, world_size: int,
                 engine: Any):
    from rwkv_tune.train.loop import Trainer

    trainer = Trainer(preset, resume=resume, rank=rank, world_size=world_size, echo=echo, engine=engine)
    trainer.run_id, trainer.claim_warnings = claim.run_id, claim.warnings
    try:
        trainer.setup()
        result = trainer.fit()
        trainer.emit("done", step=result.step, reason=result.reason, adapter=str(result.adapter or ""),
                     merged="")
        return result
    except BaseException as exc:
        from rwkv_tune.errors import UserError

        kind = "user" if isinstance(exc, UserError) else type(exc).__name__
        message = exc.one_line() if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        trainer.emit("error", kind=kind, message=message)
        raise
    finally:
        if trainer.events is not None:
            trainer.events.close()
