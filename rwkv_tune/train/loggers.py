"""Optional experiment trackers (wandb, tensorboard) fed from the same events as metrics.jsonl.

A tracker is a side channel: when one raises (at start, on a step, at the end) it is turned off and
the failure becomes a `warning` event; training goes on. wandb is finished on every way a run ends
(`done` or `error`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rwkv_tune.errors import ConfigError
from rwkv_tune.preset import Preset
from rwkv_tune.runs import EchoError

Echo = Callable[[dict[str, Any]], None]
SCALARS = {"step": ("loss", "lr", "tokens_per_s", "grad_norm"), "eval": ("loss", "ppl")}
ENDS = ("done", "error")


def _require(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"output.{extra} is set but the {module} package is not installed",
                          f"pip install 'rwkv-tune[{extra}]', or turn output.{extra} off.") from None


class Tracker:
    """One tracker behind a guard: started at the first event, turned off (and reported) when it raises."""

    def __init__(self, name: str, start: Callable[[], Any], log: Callable[[Any, dict[str, Any]], None],
                 close: Callable[[Any, dict[str, Any]], None]):
        self.name = name
        self._start, self._log, self._close = start, log, close
        self.handle: Any = None
        self.on = True

    def __call__(self, event: dict[str, Any]) -> None:
        if not self.on:
            return
        try:
            if self.handle is None:
                self.handle = self._start()
            self._log(self.handle, event)
            if event["event"] in ENDS:
                self.on = False
                self._close(self.handle, event)
        except Exception as exc:
            self.on = False
            self._close_quietly(event)
            raise EchoError(f"{self.name} failed at a {event.get('event')} event ({type(exc).__name__}: "
                            f"{str(exc).strip()[:200]}); it is turned off, training continues") from exc

    def _close_quietly(self, event: dict[str, Any]) -> None:
        if self.handle is None:
            return
        try:
            self._close(self.handle, {**event, "event": "error"})
        except Exception:  # already reporting this tracker's failure
            pass


def trackers(preset: Preset, run_dir: Path) -> list[Echo]:
    """One callable per enabled tracker; each logs step/eval scalars under their event names."""
    sinks: list[Echo] = []
    if preset.output.wandb:
        wandb = _require("wandb", "wandb")

        def start_wandb() -> Any:
            return wandb.init(project=preset.output.wandb, name=run_dir.name, config=preset.to_dict(),
                              dir=str(run_dir))

        def to_wandb(wb_run: Any, event: dict[str, Any]) -> None:
            keys = SCALARS.get(event["event"], ())
            values = {f"{event['event']}/{k}": event[k] for k in keys if event.get(k) is not None}
            if values:
                wb_run.log(values, step=event["step"])

        def finish_wandb(wb_run: Any, event: dict[str, Any]) -> None:
            wb_run.finish(exit_code=0 if event["event"] == "done" else 1)

        sinks.append(Tracker("wandb", start_wandb, to_wandb, finish_wandb))
    if preset.output.tensorboard:
        tb = _require("torch.utils.tensorboard", "tensorboard")

        def to_tensorboard(writer: Any, event: dict[str, Any]) -> None:
            for key in SCALARS.get(event["event"], ()):
                if event.get(key) is not None:
                    writer.add_scalar(f"{event['event']}/{key}", event[key], event["step"])

        sinks.append(Tracker("tensorboard", lambda: tb.SummaryWriter(log_dir=str(run_dir / "tensorboard")),
                             to_tensorboard, lambda writer, event: writer.close()))
    return sinks


def fan_out(*echoes: Echo | None) -> Echo | None:
    """One echo callable that calls each given one (None entries skipped).

    One that raises does not keep the others from seeing the event; it is dropped and the first
    failure is raised (as `EchoError`) after all have run, for the event writer to report.
    """
    live = [e for e in echoes if e is not None]
    if not live:
        return None

    def echo(event: dict[str, Any]) -> None:
        failure: Exception | None = None
        for e in list(live):
            try:
                e(event)
            except Exception as exc:
                live.remove(e)
                failure = failure or exc
        if failure is not None:
            raise failure

    return echo
