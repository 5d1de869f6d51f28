"""The training knobs the estimate depends on, with the preset's names, checked with fixable messages."""

from __future__ import annotations

from dataclasses import dataclass, fields

from rwkv_tune.errors import ConfigError
from rwkv_tune.objectives.config import OBJECTIVES
from rwkv_tune.preset.schema import (
    CANONICAL_METHOD,
    DEFAULT_TRAIN_PARTS,
    METHODS,
    MISS_MODES,
    PRECISIONS,
    QUANTS,
    STRATEGIES,
    TRAIN_PARTS,
    TRAIN_TYPES,
)
from rwkv_tune.spec import ModelSpec

ADAPTER_METHODS = ("lora", "pissa", "miss")


@dataclass(frozen=True)
class Config:
    """One fine-tuning configuration as far as memory and speed are concerned (preset vocabulary)."""

    method: str = "lora"
    rank: int = 64
    mode: str = "bone"  # miss family only: bone (shard sharing) or bat (block update)
    train_parts: tuple[str, ...] | None = None  # None: time+ln for adapters, nothing for state
    targets: tuple[str, ...] | None = None  # adapted Linears, e.g. ("att.key", "ffn.value"); None: all
    quant: str = "none"
    ctx_len: int = 1024
    micro_bsz: int = 1
    grad_cp: bool = True
    precision: str = "bf16"
    strategy: str = "single"
    devices: int = 1
    accumulate_grad_batches: int = 1
    train_type: str = "normal"
    chunk_ctx: int = 512
    chunked_ce: bool = False  # loss computed in row chunks: the full [B*T, V] fp32 logits never exist
    objective: str = "sft"  # dpo/orpo: two sequences per sample; grpo: group_size sampled sequences
    group_size: int = 8  # grpo: sequences of ctx_len (prompt) + max_new_tokens per micro-batch
    max_new_tokens: int = 256

    @property
    def rows(self) -> int:
        """Sequences in one forward: micro_bsz (sft), two per pair (dpo/orpo), one group (grpo)."""
        if self.objective in ("dpo", "orpo"):
            return 2 * self.micro_bsz
        if self.objective == "grpo":
            return self.group_size
        return self.micro_bsz

    @property
    def keeps_reference_copy(self) -> bool:
        """DPO and GRPO keep the starting values of trained dense tensors (all weights under full)."""
        return self.objective in ("dpo", "grpo")

    @property
    def deepspeed(self) -> bool:
        return self.strategy.startswith("deepspeed")

    @property
    def zero_stage(self) -> int:
        return int(self.strategy.split("_")[2]) if self.deepspeed else 0

    @property
    def offload(self) -> bool:
        return self.strategy.endswith("_offload")

    @property
    def is_adapter(self) -> bool:
        return self.method in ADAPTER_METHODS

    @property
    def parts(self) -> tuple[str, ...]:
        """Dense parameter groups trained besides the method's own parameters."""
        if self.method in ("full", "state"):
            return ()
        return DEFAULT_TRAIN_PARTS if self.train_parts is None else self.train_parts

    def to_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def canonical(method: str, mode: str | None = None) -> tuple[str, str]:
    """(method, mode) in canonical form: disha/bone/miss are one method ('miss'), bat is its 'bat' mode."""
    m = method.strip().lower()
    if m not in METHODS:
        raise ConfigError(f"unknown method {method!r}", f"Use one of: {', '.join(METHODS)}.")
    if m == "bat":
        return "miss", "bat"
    if m in ("disha", "bone", "miss"):
        return "miss", (mode or "bone").lower()
    return m, (mode or "bone").lower()


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} {value!r} is not valid", f"Use one of: {', '.join(allowed)}.")


def _positive(key: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}", f"Set {key} to 1 or more.")


def check(cfg: Config, spec: ModelSpec) -> None:
    """Raise ConfigError (one line: key, value, fix) for a configuration that cannot run."""
    _choice("method", cfg.method, tuple(dict.fromkeys(CANONICAL_METHOD.get(m, m) for m in METHODS)))
    _choice("mode", cfg.mode, MISS_MODES)
    _choice("quant", cfg.quant, QUANTS)
    _choice("precision", cfg.precision, PRECISIONS)
    _choice("strategy", cfg.strategy, STRATEGIES)
    _choice("train_type", cfg.train_type, TRAIN_TYPES)
    _choice("objective", cfg.objective, OBJECTIVES)
    for key in ("rank", "ctx_len", "micro_bsz", "devices", "accumulate_grad_batches", "chunk_ctx", "group_size",
                "max_new_tokens"):
        _positive(key, getattr(cfg, key))
    if cfg.devices > 1 and not cfg.deepspeed:
        raise ConfigError(f"devices {cfg.devices} needs a DeepSpeed strategy (strategy is 'single')",
                          "Use --strategy deepspeed_stage_1 (or 2/3) with several GPUs.")
    if cfg.method == "full" and cfg.quant != "none":
        raise ConfigError(f"quant {cfg.quant!r} cannot be used with method 'full' (quantised weights are frozen)",
                          "Use --quant none, or an adapter method such as lora.")
    if cfg.train_type == "infctx" and cfg.chunk_ctx >= cfg.ctx_len:
        raise ConfigError(f"infctx needs chunk_ctx < ctx_len, got chunk_ctx {cfg.chunk_ctx} >= ctx_len {cfg.ctx_len}",
                          "Lower chunk_ctx (e.g. ctx_len/4) or use train_type normal.")
    if cfg.train_type == "infctx" and spec.version == 5:
        raise ConfigError("infctx is not available for RWKV-5", "Use train_type normal, or an RWKV-6/7 model.")
    if cfg.method == "miss" and cfg.mode == "bat":
        bad = [d for d in (spec.n_embd, spec.dim_ffn) if d % cfg.rank]
        if bad:
            raise ConfigError(f"bat needs the layer widths divisible by rank; {bad[0]} % {cfg.rank} != 0",
                              "Pick a rank that divides n_embd and dim_ffn (e.g. 32 or 64), or use mode bone.")
    if cfg.targets is not None:
        linears = {k.removeprefix("blocks.0.").removesuffix(".weight") for k, shape in spec.expected_shapes().items()
                   if k.startswith("blocks.0.") and k.endswith(".weight") and len(shape) == 2}
        bad_targets = sorted(set(cfg.targets) - linears)
        if bad_targets:
            raise ConfigError(f"target {bad_targets[0]!r} is not a Linear of RWKV-{spec.version}",
                              f"Use any of: {', '.join(sorted(linears))}.")
    unknown = [p for p in cfg.parts if p not in TRAIN_PARTS]
    if unknown:
        raise ConfigError(f"unknown train_parts entry {unknown[0]!r}", f"Use any of: {', '.join(TRAIN_PARTS)}.")
