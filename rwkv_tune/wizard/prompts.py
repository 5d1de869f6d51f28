"""The terminal side of `rwkv-tune init`: questionary prompts over the pure flow of this package.

It asks `next_question()` until there is none, feeds each answer to `answer()`
(re-asking with the one-line reason when it is rejected), and prints the detected model, the data
kind and the live VRAM estimate after every answer. questionary is imported inside the functions.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from rwkv_tune.errors import UserError
from rwkv_tune.wizard.answers import answer, apply_fix
from rwkv_tune.wizard.defaults import current_estimate, resolved
from rwkv_tune.wizard.detect import prepare_command
from rwkv_tune.wizard.flow import next_question
from rwkv_tune.wizard.report import describe_spec, summary
from rwkv_tune.wizard.state import CPU, Question, State

ANOTHER = "\x00another"


def _is_model(path: str) -> bool:
    return Path(path).is_dir() or path.endswith((".pth", ".safetensors"))


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value if value is not None else "")


def ask(q: Question, console: Console) -> Any:
    """Ask one question and return the raw answer (Ctrl-C raises KeyboardInterrupt)."""
    import questionary

    hint = f"({q.help})" if q.help else None
    if q.kind == "model" and q.choices:
        choices = [questionary.Choice(c.title, value=c.value) for c in q.choices]
        choices.append(questionary.Choice("another file…", value=ANOTHER))
        picked = questionary.select(q.message, choices=choices, default=q.default or None,
                                    instruction=hint).unsafe_ask()
        if picked != ANOTHER:
            return picked
        return questionary.path("Model file", file_filter=_is_model).unsafe_ask()
    if q.kind in ("model", "path"):
        if hint:
            console.print(f"[dim]  {escape(q.help)}[/]")
        return questionary.path(q.message, default=_text(q.default),
                                file_filter=_is_model if q.kind == "model" else None).unsafe_ask()
    if q.kind == "select":
        choices = [questionary.Choice(c.title, value=c.value, description=c.description or None) for c in q.choices]
        return questionary.select(q.message, choices=choices, default=q.default, instruction=hint).unsafe_ask()
    if q.kind == "confirm":
        message = f"{q.message} {hint}" if hint else q.message
        return questionary.confirm(message, default=bool(q.default)).unsafe_ask()
    return questionary.text(q.message, default=_text(q.default), instruction=hint).unsafe_ask()


def confirm(message: str, default: bool = False) -> bool:
    """A yes/no question."""
    import questionary

    return bool(questionary.confirm(message, default=default).unsafe_ask())


def show_estimate(state: State, console: Console, shown: list[str] | None = None) -> list[str]:
    """Print the estimate for the answers so far (total, breakdown, fit per GPU, the fix) unless it equals `shown`."""
    try:
        e = current_estimate(state)
    except UserError as exc:
        console.print(f"[yellow]  estimate: {escape(exc.one_line())}[/]")
        return []
    if e is None:
        return []
    lines = summary(e, state.gpus, gpu_known="gpu" in state.answers, cpu=state.answers.get("gpu") == CPU)
    if lines == shown:
        return lines
    console.print(f"  [bold]{escape(lines[0])}[/]")
    for line in lines[1:]:
        style = "green" if line.startswith("✓") else "red" if line.startswith("✗") else \
            "yellow" if line.startswith(("fix", "--")) else "dim"
        console.print(f"  [{style}]{escape(line)}[/]")
    return lines


def _offer_prepare(state: State, console: Console) -> State:
    """For raw text/JSON data, offer to tokenize it once into binidx with `rwkv-tune data prepare`."""
    info = state.data
    if info is None or not info.raw:
        return state
    command, prefix = prepare_command(info)
    console.print(f"[dim]  {escape(info.path)} is {info.describe()}: the trainer tokenizes it at every run.[/]")
    if not confirm(f"Tokenize it once now? ({command})", default=False):
        return state
    done = subprocess.run([sys.executable, "-m", "rwkv_tune", "data", "prepare", info.path, "--out", prefix])
    if done.returncode != 0:
        console.print("[yellow]  data prepare failed; the preset keeps the raw data path.[/]")
        return state
    return answer(state, "data", prefix)


def _out_ok(state: State, force: bool) -> bool:
    out = Path(resolved(state)["out"]).expanduser()
    return force or not out.exists() or confirm(f"{out} exists. Overwrite it?", default=False)


def run(state: State, console: Console, *, force: bool = False) -> State:
    """Ask every remaining question; on return the preset can be built and `out` may be (over)written."""
    shown: list[str] = []
    if state.spec is not None:
        console.print(f"[bold]model[/] {escape(describe_spec(state.spec))}")
        shown = show_estimate(state, console)
    while True:
        q = next_question(state)
        if q is None:
            if _out_ok(state, force):
                break
            state = replace(state, answers={k: v for k, v in state.answers.items() if k != "out"})
            continue
        raw = ask(q, console)
        try:
            new = answer(state, q.key, raw)
        except UserError as exc:
            console.print(f"[red]  ✗ {escape(exc.one_line())}[/]")
            continue
        state = new
        if q.key == "model" and state.spec is not None:
            console.print(f"[bold]  model[/] {escape(describe_spec(state.spec))}")
        if q.key == "data" and state.data is not None:
            console.print(f"[dim]  data: {escape(state.data.describe())}[/]")
            state = _offer_prepare(state, console)
        if q.key != "out":
            shown = show_estimate(state, console, shown)
    e = current_estimate(state)
    if e is not None and e.target is not None and not e.fits_target and e.fix is not None:
        if confirm(f"It does not fit {e.fix_gpu.name}. Apply {e.fix.flags}?", default=True):
            state = apply_fix(state, e.fix.flags)
            show_estimate(state, console)
    return state
