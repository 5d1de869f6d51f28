"""Which cards a configuration fits, how far micro_bsz and ctx_len can grow, and which knob fixes an OOM."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from rwkv_tune.errors import ConfigError
from rwkv_tune.estimate import calibration as cal
from rwkv_tune.estimate.config import Config, check
from rwkv_tune.estimate.gpus import GPU, GPUS
from rwkv_tune.estimate.vram import Params, count_params, vram
from rwkv_tune.spec import ModelSpec

QUANT_BITS = {"none": 16, "int8": 8, "nf4": 4, "fp4": 4}  # frozen weight bits: a fix only suggests fewer
MAX_MICRO_BSZ = 4096
MAX_CTX_LEN = 1 << 20
CTX_STEP = 16  # v7's kernel needs multiples of 16; the others are happy with them too


@dataclass(frozen=True)
class Knob:
    """One change to the configuration and what it does to the peak (`fits`: on the target card)."""

    knob: str
    change: str
    flags: str
    saves_gib: float
    total_gib: float
    fits: bool | None
    changes_training: bool = False  # True when the run learns something different (shorter ctx, lower rank)

    def to_dict(self) -> dict[str, object]:
        return {"knob": self.knob, "change": self.change, "flags": self.flags, "saves_gib": self.saves_gib,
                "total_gib": self.total_gib, "fits": self.fits, "changes_training": self.changes_training}


def usable_gib(gpu: GPU) -> float:
    """Memory we plan to use on `gpu`: a margin is left for other processes and the estimate's error."""
    return gpu.memory_gib * cal.FIT_FRACTION


def fits(total_gib: float, gpu: GPU) -> bool:
    return total_gib <= usable_gib(gpu)


def fitting_gpus(total_gib: float) -> list[GPU]:
    """The common cards this peak fits on, smallest first."""
    return [g for g in GPUS if fits(total_gib, g)]


def _largest(pred: Callable[[int], bool], hi: int) -> int:
    """Largest k in 1..hi with pred(k), for pred true up to some point and false after; 0 if none."""
    if not pred(1):
        return 0
    lo = 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if pred(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def max_micro_bsz(spec: ModelSpec, cfg: Config, gpu: GPU, params: Params | None = None) -> int:
    """The largest micro_bsz that fits `gpu` at this ctx_len (0: not even 1)."""
    p = params or count_params(spec, cfg)
    return _largest(lambda b: fits(vram(spec, replace(cfg, micro_bsz=b), p).total_gib, gpu), MAX_MICRO_BSZ)


def max_ctx_len(spec: ModelSpec, cfg: Config, gpu: GPU, params: Params | None = None) -> int | None:
    """The largest ctx_len (a multiple of 16) that fits `gpu` at this micro_bsz; None: infctx, unbounded."""
    if cfg.train_type == "infctx":
        return None
    p = params or count_params(spec, cfg)
    m = _largest(lambda k: fits(vram(spec, replace(cfg, ctx_len=k * CTX_STEP), p).total_gib, gpu),
                 MAX_CTX_LEN // CTX_STEP)
    return m * CTX_STEP


def _candidates(spec: ModelSpec, cfg: Config) -> list[tuple[str, str, str, Config, bool]]:
    """(knob, change, flags, new config, changes_training) for every knob worth trying."""
    out: list[tuple[str, str, str, Config, bool]] = []
    if not cfg.grad_cp:
        out.append(("grad_cp", "off→on", "--grad-cp", replace(cfg, grad_cp=True), False))
    if cfg.method != "full":
        for q in ("int8", "nf4"):
            if QUANT_BITS[q] < QUANT_BITS[cfg.quant]:
                out.append(("quant", f"{cfg.quant}→{q}", f"--quant {q}", replace(cfg, quant=q), False))
    if cfg.micro_bsz > 1:
        b = cfg.micro_bsz // 2
        acc = cfg.accumulate_grad_batches * cfg.micro_bsz // b
        out.append(("micro_bsz", f"{cfg.micro_bsz}→{b} (accumulate {acc} keeps the batch)", f"--micro-bsz {b}",
                    replace(cfg, micro_bsz=b, accumulate_grad_batches=acc), False))
    if cfg.train_type == "normal" and spec.version != 5 and cfg.ctx_len > 512:
        chunk = max(CTX_STEP, min(512, cfg.ctx_len // 2) // CTX_STEP * CTX_STEP)
        out.append(("train_type", f"normal→infctx (chunk_ctx {chunk}; gradients stop at chunk borders)",
                    f"--train-type infctx --chunk-ctx {chunk}", replace(cfg, train_type="infctx", chunk_ctx=chunk), True))
    if not cfg.offload:
        stage = max(2, cfg.zero_stage)
        s = f"deepspeed_stage_{stage}_offload"
        out.append(("strategy", f"{cfg.strategy}→{s} (optimizer on the CPU, slower)", f"--strategy {s}",
                    replace(cfg, strategy=s), False))
    if cfg.deepspeed:
        out.append(("devices", f"{cfg.devices}→{cfg.devices * 2} (ZeRO shards across GPUs)",
                    f"--devices {cfg.devices * 2}", replace(cfg, devices=cfg.devices * 2), False))
    if cfg.is_adapter and cfg.rank >= 8:
        out.append(("rank", f"{cfg.rank}→{cfg.rank // 2}", f"--rank {cfg.rank // 2}",
                    replace(cfg, rank=cfg.rank // 2), True))
    if cfg.ctx_len > 2 * CTX_STEP:
        t = cfg.ctx_len // 2 // CTX_STEP * CTX_STEP
        new = replace(cfg, ctx_len=t, chunk_ctx=min(cfg.chunk_ctx, t // 2) or 1)
        out.append(("ctx_len", f"{cfg.ctx_len}→{t}", f"--ctx-len {t}", new, True))
    return out


def knobs(spec: ModelSpec, cfg: Config, gpu: GPU | None, min_saving_gib: float = 0.005) -> list[Knob]:
    """Every single-knob change that lowers the peak (by more than `min_saving_gib`), by how much, and
    whether it alone fits `gpu`."""
    base = vram(spec, cfg).total_gib
    result = []
    for knob, change, flags, new, changes_training in _candidates(spec, cfg):
        try:
            check(new, spec)
        except ConfigError:
            continue
        total = vram(spec, new).total_gib
        if base - total > min_saving_gib:
            result.append(Knob(knob, change, flags, base - total, total, fits(total, gpu) if gpu else None,
                               changes_training))
    return sorted(result, key=lambda k: (k.changes_training, -k.saves_gib))


def fix(spec: ModelSpec, cfg: Config, gpu: GPU, max_steps: int = 6) -> Knob | None:
    """The knobs that together make `cfg` fit `gpu` without changing what is learned (greedy); None if none do."""
    current = cfg
    for _ in range(max_steps):
        if fits(vram(spec, current).total_gib, gpu):
            break
        options = [k for k in knobs(spec, current, gpu) if not k.changes_training and k.knob != "devices"]
        if not options:
            return None
        fitting = [k for k in options if k.fits]
        best = min(fitting, key=_cost) if fitting else options[0]
        current = next(new for kn, ch, _, new, _ in _candidates(spec, current) if (kn, ch) == (best.knob, best.change))
    total = vram(spec, current).total_gib
    if current == cfg or not fits(total, gpu):
        return None
    names, changes, flags = _describe(cfg, current)
    return Knob(" + ".join(names), "; ".join(changes), " ".join(flags), vram(spec, cfg).total_gib - total, total, True)


def _describe(old: Config, new: Config) -> tuple[list[str], list[str], list[str]]:
    """Knob names, human changes and CLI flags that turn `old` into `new`."""
    names, changes, flags = [], [], []
    if old.grad_cp != new.grad_cp:
        names.append("grad_cp")
        changes.append("grad_cp on")
        flags.append("--grad-cp")
    if old.quant != new.quant:
        names.append("quant")
        changes.append(f"quant {old.quant}→{new.quant}")
        flags.append(f"--quant {new.quant}")
    if old.micro_bsz != new.micro_bsz:
        names.append("micro_bsz")
        changes.append(f"micro_bsz {old.micro_bsz}→{new.micro_bsz} (accumulate {new.accumulate_grad_batches})")
        flags.append(f"--micro-bsz {new.micro_bsz}")
    if old.strategy != new.strategy:
        names.append("strategy")
        changes.append(f"strategy {new.strategy}")
        flags.append(f"--strategy {new.strategy}")
    return names, changes, flags


def _cost(k: Knob) -> tuple[int, float]:
    """Among knobs that fit: cheapest in speed and quality first (grad_cp, micro_bsz, …), then the mildest."""
    order = {"grad_cp": 0, "micro_bsz": 1, "train_type": 2, "quant": 3, "strategy": 4}
    return order.get(k.knob, 5), k.saves_gib


PRESET_KEYS = {"grad_cp": "train.grad_cp", "quant": "quant", "micro_bsz": "train.micro_bsz",
               "train_type": "train.train_type", "strategy": "train.strategy", "devices": "train.devices",
               "rank": "method.r", "ctx_len": "data.ctx_len"}


def oom_advice(spec: ModelSpec, cfg: Config, limit: int = 4) -> list[str]:
    """What to try after running out of memory, in preset keys: one change per knob, those that keep what is
    learned first, then by saving (any saving counts: the estimate is rough where the run did not fit)."""
    best: dict[str, Knob] = {}
    for k in knobs(spec, cfg, None, min_saving_gib=0.0):
        best.setdefault(k.knob, k)
    return [f"{PRESET_KEYS.get(k.knob, k.knob)} {k.change}" for k in list(best.values())[:limit]]
