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


def summary(e: Estimate, gpus: Sequence[GPU] = ()) -> list[str]:
    """The estimate as short lines: total with its breakdown, fit on each detected/target GPU, and the fix."""
    parts = " · ".join(f"{_SHORT.get(k, k)} {v:.2f}" for k, v in e.breakdown.items() if v >= 0.005)
    lines = [f"VRAM ≈ {e.total_gib:.2f} GiB per GPU ({parts})"]
    cards = list(gpus) + ([e.target] if e.target is not None and e.target not in gpus else [])
    for g in cards:
        ok = fits(e.total_gib, g)
        where = " (this machine)" if g in gpus else ""
        lines.append(f"{'✓ fits' if ok else '✗ does not fit'} {g.name}{where}: {usable_gib(g):.1f} GiB usable")
    if not cards:
        lines.append(f"fits {e.gpus_fit[0].name} and larger" if e.gpus_fit else "✗ fits no common GPU")
    if e.fits_target and e.target is not None and e.max_micro_bsz:
        ctx = f", ctx_len up to {e.max_ctx_len:,}" if e.max_ctx_len else ""
        lines.append(f"on {e.target.name}: micro_bsz up to {e.max_micro_bsz} at ctx_len {e.config.ctx_len}{ctx}")
    if not e.fits_target:
        if e.fix is not None:
            lines.append(f"fix for {e.fix_gpu.name}: {e.fix.flags} → {e.fix.total_gib:.2f} GiB "
                         f"(saves {e.fix.saves_gib:.2f} GiB: {e.fix.change})")
        else:
            for k in e.knobs[:3]:
                lines.append(f"{k.flags} saves {k.saves_gib:.2f} GiB → {k.total_gib:.2f} GiB ({k.change})")
    if e.timing.time_s:
        lines.append(f"speed (rough): ~{e.timing.tokens_per_s:,.0f} tokens/s on {e.timing.gpu}; "
                     f"{e.timing.tokens:,} tokens → {_duration(e.timing.time_s)}")
    return lines


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def next_command(out: str | Path) -> str:
    """The exact command to run after the preset is written."""
    return f"rwkv-tune train {shlex.quote(str(out))}"
