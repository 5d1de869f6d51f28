"""The plain progress output of `train --no-tui` (and of any non-terminal, e.g. CI logs).

`make_printer(console)` returns the `echo` callable for `EventWriter`: on a terminal, step events
redraw one progress line in place; elsewhere a step line is printed every `every_s` seconds of
run time (by the events' own clock). Eval, checkpoint, sample, warning, error and done events get
their own lines; an error of kind "user" is left to the command that raised it. Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.control import Control
from rich.segment import ControlType
from rich.text import Text

from rwkv_tune.tui.format import fmt_loss, fmt_num, one_line, plan_line, step_line
from rwkv_tune.tui.objective_state import summary
from rwkv_tune.tui.state import RunState


def make_printer(console: Console, *, every_s: float = 10.0) -> Callable[[dict[str, Any]], None]:
    """A callable(event) that prints a run's events compactly to `console`."""
    state = RunState()
    live = console.is_terminal
    shown = {"line": False, "time": None, "step": -1}

    def clear_live() -> None:
        if live and shown["line"]:
            console.control(Control.move_to_column(0), Control((ControlType.ERASE_IN_LINE, 2)))
            shown["line"] = False

    def say(text: str, style: str = "") -> None:
        clear_live()
        console.print(Text(text, style), soft_wrap=True)

    def print_step(event: dict[str, Any]) -> None:
        line = " · ".join(part for part in (step_line(state), summary(event)) if part)
        if live:
            clear_live()
            console.print(Text(line[: max(1, console.width - 1)]), end="", soft_wrap=True)
            shown["line"] = True
            return
        now = event.get("time")
        last = shown["time"]
        total = state.total_steps
        due = (last is None or not isinstance(now, (int, float)) or now - last >= every_s
               or (total is not None and state.step >= total))
        if due:
            console.print(Text(line), soft_wrap=True)
            shown["time"], shown["step"] = now, state.step

    def printer(event: dict[str, Any]) -> None:
        state.apply(event)
        kind = event.get("event")
        if kind == "step":
            print_step(event)
        elif kind == "run_start":
            resumed = event.get("resumed_from_step")
            head = f"resuming from step {resumed}: " if resumed is not None else "training: "
            say(head + plan_line(state.plan), "bold")
            shown["time"] = None
        elif kind == "eval":
            extra = summary(event)  # dpo/orpo: margin and preference accuracy instead of perplexity
            say(f"eval at step {event.get('step')}: loss {fmt_loss(event.get('loss'))} · "
                + (extra or f"ppl {fmt_num(event.get('ppl'))}"), "cyan")
        elif kind == "checkpoint":
            say(f"checkpoint at step {event.get('step')}: {event.get('path', '')}", "green")
        elif kind == "sample":
            say(f"sample at step {event.get('step')}: {one_line(event.get('prompt', ''), 60)} → "
                f"{one_line(event.get('text', ''), 200)}", "magenta")
        elif kind == "warning":
            say(f"warning: {event.get('message', '')}", "yellow")
        elif kind == "error" and event.get("kind") != "user":  # a user error is printed once, by whoever raised it
            say(f"error ({event.get('kind', '?')}): {event.get('message', '')}", "bold red")
        elif kind == "control":
            say(f"trainer: {event.get('action', '')}", "blue")
        elif kind == "merge_progress":
            if live:
                clear_live()
                console.print(f"merging {event.get('done')}/{event.get('total')} tensors", end="",
                              markup=False, highlight=False)
                shown["line"] = True
        elif kind == "merge_done":
            mark = {True: "verified", False: "VERIFICATION FAILED"}.get(event.get("verified"), "not verified")
            say(f"merged: {event.get('path')} ({mark})", "bold green" if event.get("verified") else "bold yellow")
        elif kind == "done":
            clear_live()
            if state.losses and (live or shown["step"] != state.step):
                console.print(Text(step_line(state)), soft_wrap=True)
            merged = f" · merged {event['merged']}" if event.get("merged") else ""
            say(f"{event.get('reason', 'finished')} at step {event.get('step')} · adapter "
                f"{event.get('adapter') or '-'}{merged}", "bold green")

    return printer
