"""What the wizard prints: the detected model in one line, the live estimate as short lines, the next command."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rwkv_tune.estimate.fit import fits, usable_gib
from rwkv_tune.estimate.gpus import GPU
from rwkv_tune.spec import ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    from rwkv_tune.estimate import Estimate

_SHORT = {"base_weights": "base", "embedding_head": "emb+head", "trainable_weights": "trained", "gradients": "grads",
          "optimizer": "AdamW", "activations": "activations", "logits_loss": "logits", "workspace": "workspace",
          "cuda_context": "CUDA", "allocator_overhead": "allocator"}


def describe_spec(spec: ModelSpec) -> str:
    """One line: what the model file is."""
    name = f"{spec.variant_name} {spec.size_name} ({spec.arch} + {spec.variant})" if spec.variant \
        else f"RWKV-{spec.version} {spec.size_name} ({spec.arch})"
    return (f"{name}: {spec.n_layer} layers × {spec.n_embd}, "
            f"{spec.n_head} heads × {spec.head_size}, vocab {spec.vocab_size}, {spec.params / 1e6:,.1f}M params, "
            f"{spec.dtype}")


def summary(e: Estimate, gpus: Sequence[GPU] = (), *, gpu_known: bool = True, cpu: bool = False) -> list[str]:
    """The estimate as short lines: total with its breakdown, fit on each detected/target GPU, the fix and the time.

    Before the GPU question is answered (`gpu_known` False) only the VRAM it needs; for a run on this CPU
    (`cpu`) the time measured here instead of any GPU verdict.
    """
    parts = " · ".join(f"{_SHORT.get(k, k)} {v:.2f}" for k, v in e.breakdown.items() if v >= 0.005)
    lines = [f"VRAM ≈ {e.total_gib:.2f} GiB per GPU ({parts})"]
    if not gpu_known:
        return [*lines, "fit and time: after the GPU question"]
    if cpu:
        return [lines[0].replace("VRAM ≈", "memory ≈").replace(" per GPU", ""), cpu_time_line(e)]
    cards = list(gpus) + ([e.target] if e.target is not None and e.target_asked and e.target not in gpus else [])
    for g in cards:
        ok = fits(e.total_gib, g)
        where = " (this machine)" if g in gpus else ""
        lines.append(f"{'✓ fits' if ok else '✗ does not fit'} {g.name}{where}: {usable_gib(g):.1f} GiB usable")
    if not cards:
        lines.append(f"fits {e.gpus_fit[0].name} and larger" if e.gpus_fit else "✗ fits no common GPU")
    if e.fits_target and e.target is not None and e.target_asked and e.max_micro_bsz:
        ctx = f", ctx_len up to {e.max_ctx_len:,}" if e.max_ctx_len else ""
        lines.append(f"on {e.target.name}: micro_bsz up to {e.max_micro_bsz} at ctx_len {e.config.ctx_len}{ctx}")
    if not e.fits_target and (e.target_asked or not e.gpus_fit):
        if e.fix is not None:
            lines.append(f"fix for {e.fix_gpu.name}: {e.fix.flags} → {e.fix.total_gib:.2f} GiB "
                         f"(saves {e.fix.saves_gib:.2f} GiB: {e.fix.change})")
        else:
            for k in e.knobs[:3]:
                lines.append(f"{k.flags} saves {k.saves_gib:.2f} GiB → {k.total_gib:.2f} GiB ({k.change})")
    if e.timing.time_s:
        lines.append(f"speed (rough): ~{e.timing.tokens_per_s:,.0f} tokens/s on {e.timing.gpu}; "
                     f"{e.timing.tokens:,} tokens → {_duration(e.timing.time_s)}")
    elif not e.target_asked:
        lines.append("time: depends on the card (choose a GPU, or this CPU to measure it here)")
    return lines


def cpu_time_line(e: Estimate) -> str:
    """The run's time on this CPU, from a short step measured here (in a subprocess)."""
    import subprocess

    from rwkv_tune.estimate.cpu_speed import cpu_timing

    try:
        t, measured = cpu_timing(e.spec, e.config, e.timing.tokens)
    except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
        return f"time on this CPU: could not be measured ({exc})"
    line = f"speed measured on this CPU ({measured}, scaled by FLOPs): ~{t.tokens_per_s:,.1f} tokens/s"
    return line + (f"; {t.tokens:,} tokens → {_duration(t.time_s)}" if t.time_s else "")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def next_command(out: str | Path) -> str:
    """The exact command to run after the preset is written."""
    return f"rwkv-tune train {shlex.quote(str(out))}"
