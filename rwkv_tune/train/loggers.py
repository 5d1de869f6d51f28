"""Optional experiment trackers (wandb, tensorboard) fed from the same events as metrics.jsonl."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rwkv_tune.errors import ConfigError
from rwkv_tune.preset import Preset

Echo = Callable[[dict[str, Any]], None]
SCALARS = {"step": ("loss", "lr", "tokens_per_s", "grad_norm"), "eval": ("loss", "ppl")}


def _require(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"output.{extra} is set but the {module} package is not installed",
                          f"pip install 'rwkv-tune[{extra}]', or turn output.{extra} off.") from None


def trackers(preset: Preset, run_dir: Path) -> list[Echo]:
    """One callable per enabled tracker; each logs step/eval scalars under their event names."""
    sinks: list[Echo] = []
    if preset.output.wandb:
        wandb = _require("wandb", "wandb")
        wb_run = wandb.init(project=preset.output.wandb, name=run_dir.name, config=preset.to_dict(),
                            dir=str(run_dir))

        def to_wandb(event: dict[str, Any]) -> None:
            keys = SCALARS.get(event["event"])
            if keys:
                wb_run.log({f"{event['event']}/{k}": event[k] for k in keys if event.get(k) is not None},
                           step=event["step"])
            elif event["event"] == "done":
                wb_run.finish()

        sinks.append(to_wandb)
    if preset.output.tensorboard:
        tb = _require("torch.utils.tensorboard", "tensorboard")
        writer = tb.SummaryWriter(log_dir=str(run_dir / "tensorboard"))

        def to_tensorboard(event: dict[str, Any]) -> None:
            for key in SCALARS.get(event["event"], ()):
                if event.get(key) is not None:
                    writer.add_scalar(f"{event['event']}/{key}", event[key], event["step"])
            if event["event"] in ("done", "error"):
                writer.close()

        sinks.append(to_tensorboard)
    return sinks


def fan_out(*echoes: Echo | None) -> Echo | None:
    """One echo callable that calls each given one (None entries skipped)."""
    live = [e for e in echoes if e is not None]
    if not live:
        return None
    if len(live) == 1:
        return live[0]

    def echo(event: dict[str, Any]) -> None:
        for e in live:
            e(event)

    return echo
