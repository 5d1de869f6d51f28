"""Training: the loop (`loop.Trainer`), schedules, losses, checkpoints, engines and the launcher.

`run(preset, ...)` trains in this process (one device); `launcher` starts several ranks.
"""

from __future__ import annotations

from typing import Any

from rwkv_tune.preset import Preset


def run(preset: Preset, *, resume: str | None = None, echo: Any = None, rank: int = 0, world_size: int = 1,
        engine: Any = None):
    """Train one run to the end (or until stopped); returns `loop.TrainResult`."""
    from rwkv_tune.train.loop import Trainer

    trainer = Trainer(preset, resume=resume, rank=rank, world_size=world_size, echo=echo, engine=engine)
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
