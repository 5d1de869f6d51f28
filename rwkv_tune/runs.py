"""The run directory, the contract between train, dashboard, watch, resume and merge.

    <output.dir>/
      preset.yaml            the resolved preset (with provenance: tool version, fingerprints)
      metrics.jsonl          the event stream: one JSON object per line (schema below)
      checkpoints/           step-<N>/adapter.safetensors + resume state (the last K kept)
      adapter.safetensors    the latest complete adapter (or trainable weights)
      merged.pth, merge-report.json
      .lock                  held (flock) by the live trainer: pid, host, start time (rwkv_tune.train.run_lock)
      archive/<time>/        an earlier run moved aside by `train --restart`
      rollouts.jsonl         GRPO: one line per sampled group {group, index, prompt, completions, rewards, terms,
                             advantages} (a resume drops the lines past its checkpoint: they are sampled again)

Event schema, version 1. Every line has `event`, `time` (unix seconds) and `v` (schema version):
  run_start  {run, preset, plan: {total_steps, epoch_steps, epoch_count, tokens_per_step, total_tokens,
              trainable_params, total_params, passes_over_data}, spec, resumed_from_step, run_id}
  step       {step, epoch, loss, lr, tokens, tokens_per_s, elapsed_s, grad_norm, mem: {...}, skipped}
             + the objective's fields (averaged over the step's micro-batches):
               dpo  reward_chosen, reward_rejected, reward_margin, pref_accuracy, logp_chosen, logp_rejected
               orpo nll_chosen, odds_ratio_loss, log_odds_ratio, pref_accuracy
               grpo reward_mean, reward_std, reward/<fn>/mean, reward/<fn>/std, kl, clip_fraction, completion_length
  eval       {step, loss, ppl}   (dpo/orpo: {step, loss, pref_accuracy, reward_margin, …} on data.eval_path pairs)
  sample     {step, prompt, text}
  checkpoint {step, epoch, path}
  warning    {message}
  error      {message, kind}
  done       {step, reason: finished|stopped|interrupted|diverged, adapter, merged}
  control    {action: pause|resume|save|stop}   the trainer acted on a control word
  merge_progress {done, total};  merge_done {path, verified, report}
Torch-free: the dashboard and `watch` read this without importing torch.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

SCHEMA_VERSION = 1
EVENT_TYPES = ("run_start", "step", "eval", "sample", "checkpoint", "warning", "error", "done", "control",
               "merge_progress", "merge_done")


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory."""

    root: Path

    @property
    def preset(self) -> Path:
        return self.root / "preset.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter.safetensors"

    @property
    def merged(self) -> Path:
        return self.root / "merged.pth"

    @property
    def merge_report(self) -> Path:
        return self.root / "merge-report.json"

    @property
    def control(self) -> Path:
        """A file the dashboard writes to ask the trainer to pause, save or stop (one word)."""
        return self.root / "control"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:08d}"

    def list_checkpoints(self) -> list[Path]:
        """Complete checkpoints (those with a `complete` marker), oldest first."""
        if not self.checkpoints.exists():
            return []
        return sorted(p for p in self.checkpoints.iterdir()  # not .step-N.tmp: a save still being assembled
                      if p.is_dir() and p.name.startswith("step-") and (p / "complete").exists())

    def latest_checkpoint(self) -> Path | None:
        found = self.list_checkpoints()
        return found[-1] if found else None


class EchoError(Exception):
    """An echo callable (a tracker, the progress printer) failed; its message becomes a warning event."""


class EventWriter:
    """Appends events to metrics.jsonl, one flushed line each (only rank 0 should own one).

    The echo is a side channel: when it raises, the failure is written as a `warning` event and the
    caller (the trainer) carries on.
    """

    def __init__(self, path: Path, *, echo: Any = None):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: TextIO = open(path, "a", encoding="utf-8")
        self.echo = echo  # optional callable(event_dict): the plain progress printer, trackers
        self._reporting = False

    def emit(self, event: str, **payload: Any) -> dict[str, Any]:
        if event not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event!r}")
        record = {"event": event, "time": round(time.time(), 3), "v": SCHEMA_VERSION, **payload}
        self._file.write(json.dumps(record, default=_jsonable) + "\n")
        self._file.flush()
        if event in ("checkpoint", "done", "error"):
            os.fsync(self._file.fileno())
        if self.echo is not None:
            try:
                self.echo(record)
            except Exception as exc:
                if self._reporting:  # failing while a failure is reported: not reported again
                    return record
                message = str(exc) if isinstance(exc, EchoError) else (
                    f"progress output failed ({type(exc).__name__}: {exc}); training continues")
                self._reporting = True
                try:
                    self.emit("warning", message=message)
                finally:
                    self._reporting = False
        return record

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def read_events(path: Path) -> list[dict[str, Any]]:
    """All complete events in a metrics file (a torn last line from a crash is ignored)."""
    if not path.exists():
        return []
    events = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


def follow_events(path: Path, *, poll_s: float = 0.2, stop: Any = None, from_start: bool = True) -> Iterator[dict]:
    """Yield events as they are appended (like `tail -f`), until `stop()` is true or a `done`/`error` arrives."""
    position = 0
    buffer = ""
    while True:
        if path.exists():
            with open(path, encoding="utf-8") as f:
                if not from_start and position == 0:
                    f.seek(0, os.SEEK_END)
                else:
                    f.seek(position)
                chunk = f.read()
                position = f.tell()
            buffer += chunk
            *lines, buffer = buffer.split("\n")
            for line in lines:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                yield record
                if record.get("event") in ("done", "error"):
                    return
        if stop is not None and stop():
            return
        time.sleep(poll_s)
