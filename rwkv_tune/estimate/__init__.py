"""VRAM and time for a fine-tuning configuration, with or without the model file; never imports torch.

    from rwkv_tune.estimate import estimate
    e = estimate(size="1.5B", version=7, method="lora", rank=64, quant="nf4", ctx_len=2048, gpu="4090")
    e.total_gib, e.breakdown, e.fits_target, e.max_micro_bsz, e.timing.tokens_per_s
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rwkv_tune.errors import ConfigError
from rwkv_tune.estimate.config import Config, canonical, check
from rwkv_tune.estimate.fit import Knob, fits, fitting_gpus, fix, knobs, max_ctx_len, max_micro_bsz
from rwkv_tune.estimate.gpus import GPU, GPUS, find_gpu
from rwkv_tune.estimate.released import released_spec
from rwkv_tune.estimate.timing import Timing, timing
from rwkv_tune.estimate.vram import DESCRIPTIONS, VRAM, vram
from rwkv_tune.spec import ModelSpec

__all__ = ["Config", "Estimate", "GPU", "GPUS", "Knob", "Timing", "VRAM", "estimate", "find_gpu", "released_spec",
           "resolve_model", "vram"]


@dataclass(frozen=True)
class Estimate:
    """The answer to "what will this run cost?": peak GiB per GPU, where it fits, how fast it goes."""

    spec: ModelSpec
    config: Config
    vram: VRAM
    gpus_fit: list[GPU]  # common cards it fits, smallest first
    target: GPU | None  # the card asked for, else the smallest common card that fits (None: none does)
    fits_target: bool
    max_micro_bsz: int | None  # on `target`, at this ctx_len (0: not even 1)
    max_ctx_len: int | None  # on `target`, at this micro_bsz (None: infctx, or no target)
    knobs: list[Knob]  # single changes that lower the peak, biggest saving first
    fix: Knob | None  # knobs that together make it fit `fix_gpu` when it does not fit `target`
    fix_gpu: GPU  # `target`, or the largest common card when nothing fits
    timing: Timing  # speed and time on the card asked for; none without one (the time depends on the card)
    notes: list[str] = field(default_factory=list)
    target_asked: bool = True  # False: `target` is only the smallest common card that fits, not a verdict

    @property
    def total_gib(self) -> float:
        return self.vram.total_gib

    @property
    def breakdown(self) -> dict[str, float]:
        return self.vram.breakdown

    def to_dict(self) -> dict[str, Any]:
        p = self.vram.params
        return {
            "model": {**self.spec.to_dict(), "params": p.total},
            "config": self.config.to_dict(),
            "total_gib": self.total_gib,
            "breakdown": self.breakdown,
            "peak_phase": self.vram.peak_phase,
            "phases": self.vram.phases,
            "activation_detail": dict(self.vram.layer_detail),
            "cpu_offload_gib": self.vram.cpu_offload_gib,
            "trainable_params": p.trainable,
            "gpus_fit": [g.name for g in self.gpus_fit],
            "target": self.target.to_dict() if self.target else None,
            "target_asked": self.target_asked,
            "fits_target": self.fits_target,
            "max_micro_bsz": self.max_micro_bsz,
            "max_ctx_len": self.max_ctx_len,
            "knobs": [k.to_dict() for k in self.knobs],
            "fix": self.fix.to_dict() if self.fix else None,
            "fix_gpu": self.fix_gpu.name,
            "timing": self.timing.to_dict(),
            "notes": self.notes,
            "components": DESCRIPTIONS,
        }


def resolve_model(model: ModelSpec | str | Path | None = None, size: str | None = None,
                  version: int | None = None) -> ModelSpec:
    """A spec from a detected spec, a model file (read with torch for .pth), or a released size."""
    if isinstance(model, ModelSpec):
        return model
    if size is not None:
        return released_spec(size, version or 7)
    if model is not None:
        from rwkv_tune.spec import detect

        spec = detect(model)
        if version is not None and version != spec.version:
            raise ConfigError(f"--version {version} does not match {model}, which is RWKV-{spec.version}",
                              "Drop --version; it is detected from the file.")
        return spec
    raise ConfigError("no model given", "Pass --model M.pth, or --size (e.g. --size 1.5B --version 7).")


def estimate(model: ModelSpec | str | Path | None = None, *, size: str | None = None, version: int | None = None,
             method: str = "lora", rank: int = 64, mode: str | None = None, gpu: str | GPU | None = None,
             tokens: int | None = None, epoch_steps: int | None = None, epoch_count: int | None = None,
             **knob_values: Any) -> Estimate:
    """Estimate peak VRAM per GPU, the cards it fits, the limits on one card and the speed of a run.

    `knob_values` are the remaining `Config` fields (quant, ctx_len, micro_bsz, grad_cp, precision,
    strategy, devices, accumulate_grad_batches, train_type, chunk_ctx, train_parts, targets,
    chunked_ce). The run's tokens are `tokens`, else epoch_steps x epoch_count optimizer steps.
    """
    spec = resolve_model(model, size, version)
    method, mode = canonical(method, mode)
    unknown = sorted(set(knob_values) - set(Config.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"unknown estimate option {unknown[0]!r}",
                          f"Use any of: {', '.join(Config.__dataclass_fields__)}.")
    for key in ("train_parts", "targets"):
        if knob_values.get(key) is not None:
            knob_values[key] = tuple(knob_values[key])
    cfg = Config(method=method, rank=rank, mode=mode, **knob_values)
    check(cfg, spec)

    v = vram(spec, cfg)
    fitting = fitting_gpus(v.total_gib)
    target = find_gpu(gpu) if isinstance(gpu, str) else gpu
    if target is None and fitting:
        target = fitting[0]
    fits_target = fits(v.total_gib, target) if target else False
    max_b = max_micro_bsz(spec, cfg, target, v.params) if target else None
    max_t = max_ctx_len(spec, cfg, target, v.params) if target else None
    fix_card = target if target else GPUS[-1]
    fix_knobs = None if fits_target else fix(spec, cfg, fix_card)

    if tokens is None and epoch_steps and epoch_count:
        tokens = epoch_steps * epoch_count * cfg.accumulate_grad_batches * cfg.micro_bsz * cfg.devices * cfg.ctx_len
    notes = []
    if spec.version == 7 and cfg.ctx_len % 16:
        notes.append(f"RWKV-7's kernel pads ctx_len {cfg.ctx_len} to a multiple of 16.")
    if v.cpu_offload_gib:
        notes.append(f"DeepSpeed offload keeps {v.cpu_offload_gib:.1f} GiB per GPU in CPU RAM.")
    if cfg.train_type == "infctx":
        notes.append("infctx: memory follows chunk_ctx, not ctx_len.")
    return Estimate(spec=spec, config=cfg, vram=v, gpus_fit=fitting, target=target, fits_target=fits_target,
                    max_micro_bsz=max_b, max_ctx_len=max_t, knobs=knobs(spec, cfg, fix_card), fix=fix_knobs,
                    fix_gpu=fix_card,
                    timing=timing(spec, cfg, v.params, target if fits_target and gpu is not None else None, tokens),
                    notes=notes, target_asked=gpu is not None)

