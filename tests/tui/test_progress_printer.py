"""The plain progress printer used by `train --no-tui` and non-terminals."""

from __future__ import annotations

import io

from rich.console import Console

from rwkv_tune.progress import make_printer
from rwkv_tune.runs import read_events


def render(events, *, terminal: bool) -> str:
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=200, color_system=None if not terminal else "standard")
    printer = make_printer(console, every_s=60.0)
    for event in events:
        printer(event)
    return out.getvalue()


def scripted_events(scripted):
    scripted.start()
    scripted.steps(100)
    scripted.eval()
    scripted.warning("loss spiked")
    scripted.checkpoint()
    scripted.sample()
    scripted.steps(300)
    scripted.done()
    return read_events(scripted.path)


def test_plain_output_is_throttled_lines(scripted):
    out = render(scripted_events(scripted), terminal=False)
    lines = out.splitlines()
    assert lines[0].startswith("training: 400 steps (4 epochs × 100), 3.28M tokens")
    steps = [line for line in lines if line.startswith("step ")]
    assert 20 <= len(steps) <= 30  # 4 s a step, one line a minute of run time, plus the last
    assert steps[0].startswith("step 1/400 · epoch 1/4") and "ETA 26m 36s" in steps[0]
    assert steps[-1].startswith("step 400/400") and "tok/s" in steps[-1] and "GPU 5.21 GiB" in steps[-1]
    assert "eval at step 100: loss" in out and "warning: loss spiked" in out
    assert "checkpoint at step 100: runs/demo/checkpoints/step-00000100" in out
    assert "sample at step 100: The river → ran down to the sea" in out
    assert lines[-1] == "finished at step 400 · adapter runs/demo/adapter.safetensors"
    assert "\r" not in out and "\x1b" not in out


def test_terminal_output_redraws_one_line(scripted):
    out = render(scripted_events(scripted), terminal=True)
    assert out.count("\x1b[2K") >= 400  # each step erases the line it redraws
    lines = [line for line in out.split("\n") if line.strip()]
    assert "finished at step 400 · adapter" in lines[-1]
    assert "step 400/400" in lines[-2] and "loss" in lines[-2]  # the last step stays on screen
