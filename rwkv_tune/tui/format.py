"""Text for a run's state: durations, counts, and the lines the dashboard, `watch` and the printer show.

Pure functions of a `RunState` (no Textual), unit-tested on their own.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from rwkv_tune.train.plan import many_passes_warning

if TYPE_CHECKING:
    from rwkv_tune.tui.state import RunState

def fmt_duration(seconds: float | None) -> str:
    """45s, 3m 12s, 2h 05m, 1d 03h."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def fmt_count(n: float | None) -> str:
    """1234 → 1.23k, 4_100_000 → 4.10M."""
    if n is None:
        return "-"
    n = float(n)
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}" if abs(n) / size >= 100 else f"{n / size:.2f}{unit}"
    return f"{n:.0f}" if n == int(n) else f"{n:.1f}"


def fmt_loss(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.4f}" if math.isfinite(x) else str(x)


def fmt_num(x: Any) -> str:
    """A short number (3 significant digits) or '-'."""
    if not isinstance(x, (int, float)):
        return "-"
    return f"{x:.3g}" if math.isfinite(x) else str(x)


def fmt_lr(x: float | None) -> str:
    return "-" if x is None else f"{x:.2e}"


def one_line(text: Any, width: int) -> str:
    """Text squeezed to one line of at most `width` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: max(0, width - 1)] + "…"


def plan_line(plan: dict) -> str:
    """'400 steps (4 epochs × 100), 3.28M tokens, 1.6 passes, trains 1.2M of 10M params'."""
    if not plan:
        return "no plan"
    parts = [f"{plan.get('total_steps', '?')} steps ({plan.get('epoch_count', '?')} epochs × "
             f"{plan.get('epoch_steps', '?')})"]
    if plan.get("total_tokens"):
        parts.append(f"{fmt_count(plan['total_tokens'])} tokens")
    if plan.get("passes_over_data"):
        passes = plan["passes_over_data"]
        parts.append(many_passes_warning(passes) or f"{fmt_num(passes)} passes over the data")
    if plan.get("trainable_params"):
        parts.append(f"trains {fmt_count(plan['trainable_params'])} of {fmt_count(plan.get('total_params'))} params")
    return ", ".join(parts)


def model_line(state: RunState) -> str:
    """'x070 0.1B L12 D768 · lora r64 α32 · quant none'."""
    spec, preset = state.spec, state.preset
    model = " ".join(str(x) for x in (spec.get("arch"), spec.get("size_name")) if x)
    if spec.get("n_layer"):
        model += f" L{spec['n_layer']} D{spec.get('n_embd', '?')}"
    method = preset.get("method") or {}
    name = method.get("name", "?")
    how = name if name in ("state", "full") else f"{name} r{method.get('r', '?')}"
    if name in ("lora", "pissa"):
        how += f" α{fmt_num(method.get('alpha'))}"
    return f"{model or 'model ?'} · {how} · quant {preset.get('quant', 'none')}"


def devices_line(state: RunState) -> str:
    if state.devices:
        return state.devices
    train = state.preset.get("train") or {}
    if not train:
        return "-"
    count = _whole(train.get("devices")) * _whole(train.get("nodes"))
    return f"{train.get('device', 'auto')} ×{count}"


def _epoch_tokens_elapsed(state: RunState) -> list[str]:
    """['epoch 1/4', '1.20M/4.10M tokens', '3m 12s elapsed'] (epoch and tokens only when known)."""
    parts = []
    epoch = state.display_epoch
    if epoch is not None:
        parts.append(f"epoch {epoch}/{state.plan.get('epoch_count', '?')}")
    if state.tokens is not None:
        total_tokens = state.plan.get("total_tokens")
        parts.append(f"{fmt_count(state.tokens)}/{fmt_count(total_tokens)} tokens" if total_tokens
                     else f"{fmt_count(state.tokens)} tokens")
    parts.append(f"{fmt_duration(state.elapsed_s)} elapsed")
    return parts


def progress_line(state: RunState) -> str:
    """'step 120/400 · epoch 1/4 · 1.20M/4.10M tokens · 3m 12s elapsed · ETA 7m 40s'."""
    total = state.total_steps
    parts = [f"step {state.step}/{total if total else '?'}", *_epoch_tokens_elapsed(state)]
    if state.status == "done":
        parts.append("finished")
    elif not state.finished:
        parts.append(f"ETA {fmt_duration(state.eta_s)}")
    return " · ".join(parts)


def progress_head(state: RunState) -> str:
    """'step 120/400 · ETA 7m 40s' (what the dashboard shows beside its bar)."""
    total = state.total_steps
    head = f"step {state.step}/{total if total else '?'}"
    if state.status == "done":
        return head + " · finished"
    if state.finished:
        return head + f" · {state.status}"
    return head + f" · ETA {fmt_duration(state.eta_s)}"


def progress_detail(state: RunState) -> str:
    """'epoch 1/4 · 1.20M/4.10M tokens · 3m 12s elapsed · 1.23k tok/s'."""
    parts = _epoch_tokens_elapsed(state)
    if state.recent_tokens_per_s:
        parts.append(f"{fmt_count(state.recent_tokens_per_s)} tok/s")
    return " · ".join(parts)


def memory_line(mem: dict) -> str:
    """GPU allocated/reserved against the estimate, or CPU RSS."""
    alloc = mem.get("gpu_allocated_gib")
    if alloc is not None:
        text = f"GPU {alloc:.2f} GiB"
        if mem.get("gpu_reserved_gib") is not None:
            text += f" (rsv {mem['gpu_reserved_gib']:.2f})"
        if mem.get("estimate_gib"):
            text += f" / est {mem['estimate_gib']:.2f}"
        return text
    if mem.get("cpu_rss_gib") is not None:
        return f"CPU RSS {mem['cpu_rss_gib']:.2f} GiB"
    return "-"


def step_line(state: RunState) -> str:
    """The one-line progress summary the plain printer shows for a step."""
    parts = [progress_line(state), f"loss {fmt_loss(state.loss)}"]
    if state.smoothed_loss is not None:
        parts[-1] += f" (avg {fmt_loss(state.smoothed_loss)})"
    parts.append(f"lr {fmt_lr(state.lr)}")
    if state.tokens_per_s:
        parts.append(f"{fmt_count(state.tokens_per_s)} tok/s")
    mem = memory_line(state.mem)
    if mem != "-":
        parts.append(mem)
    if state.nonfinite or state.skipped:
        parts.append(f"nan {state.nonfinite} skip {state.skipped}")
    return " · ".join(parts)


def summary_lines(state: RunState, *, now: float | None = None) -> list[str]:
    """A plain multi-line summary of a run (what `watch --plain` prints); `now` dates the last event."""
    if state.events == 0:
        return ["no events yet"]
    status = state.status_label
    if now is not None and state.last_time is not None and not state.finished:
        status += f" (last event {fmt_duration(now - state.last_time)} ago)"
    lines = [f"run      {state.run or '-'}", f"model    {model_line(state)}",
             f"status   {status}", f"progress {progress_line(state)}",
             f"loss     {fmt_loss(state.loss)} (smoothed {fmt_loss(state.smoothed_loss)})"]
    if state.evals:
        step, loss, ppl = state.evals[-1]
        lines.append(f"eval     {fmt_loss(loss)} · ppl {fmt_num(ppl)} at step {step}")
    if state.objective.latest:  # dpo/orpo/grpo: reward, kl, margin, preference accuracy
        from rwkv_tune.tui.objective_state import summary

        lines.append(f"{state.objective.kind or 'objective':<8} {summary(state.objective.latest)}")
    lines.append(f"speed    {fmt_count(state.recent_tokens_per_s)} tokens/s · memory {memory_line(state.mem)}")
    lines.append(f"issues   {state.warnings} warnings · {state.nonfinite} non-finite losses · "
                 f"{state.skipped} skipped steps")
    if state.checkpoints:
        last = state.checkpoints[-1]
        lines.append(f"saved    {len(state.checkpoints)} checkpoints, last at step {last.get('step')}: "
                     f"{last.get('path', '')}")
    if state.done:
        lines.append(f"adapter  {state.done.get('adapter') or '-'}")
    if state.merge.path:
        lines.append(f"merged   {state.merge.path}")
    if state.merge.notice:
        lines.append(f"note     {state.merge.notice}")
    if state.error:
        lines.append(f"error    {state.error.get('message', '')}")
    return lines


def _whole(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 1 else 1
