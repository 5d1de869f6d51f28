"""Common GPUs by name: memory as the driver reports it, and the dense bf16 tensor peak for speed."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rwkv_tune.errors import ConfigError


@dataclass(frozen=True)
class GPU:
    """One card: `memory_gib` is what nvidia-smi shows (MiB / 1024); `bf16_tflops` the dense peak."""

    name: str
    memory_gib: float
    bf16_tflops: float | None = None
    aliases: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "memory_gib": self.memory_gib, "bf16_tflops": self.bf16_tflops}


# Dense bf16 tensor TFLOPS with fp32 accumulation, from vendor datasheets (GeForce cards run fp32
# accumulation at half the fp16-accumulate rate; laptop and some GeForce figures are scaled from SM
# counts and clocks, so they are approximate). Ordered by memory, then speed.
GPUS: tuple[GPU, ...] = (
    GPU("RTX 3060 Laptop 6GB", 6.0, 17.0, ("3060laptop", "3060m")),
    GPU("RTX 4060 Laptop 8GB", 8.0, 25.0, ("4060laptop", "4060m")),
    GPU("RTX 3070 8GB", 8.0, 20.3, ("3070", "rtx3070")),
    GPU("RTX 4060 8GB", 8.0, 30.0, ("4060", "rtx4060")),
    GPU("RTX 3060 12GB", 12.0, 25.6, ("3060", "rtx3060")),
    GPU("RTX 4070 12GB", 12.0, 58.0, ("4070", "rtx4070")),
    GPU("T4 16GB", 15.0, 65.0, ("t4", "teslat4")),
    GPU("RTX 4060 Ti 16GB", 16.0, 44.0, ("4060ti", "rtx4060ti")),
    GPU("RTX 4090 Laptop 16GB", 16.0, 80.0, ("4090laptop", "4090m")),
    GPU("RTX 4080 16GB", 16.0, 97.0, ("4080", "rtx4080")),
    GPU("RTX 5080 16GB", 16.0, 112.0, ("5080", "rtx5080")),
    GPU("L4 24GB", 22.5, 121.0, ("l4",)),
    GPU("A10 24GB", 22.5, 125.0, ("a10",)),
    GPU("RTX 3090 24GB", 24.0, 71.0, ("3090", "rtx3090")),
    GPU("RTX 4090 24GB", 24.0, 165.2, ("4090", "rtx4090")),
    GPU("RTX 5090 32GB", 32.0, 209.5, ("5090", "rtx5090")),
    GPU("A100 40GB", 40.0, 312.0, ("a10040", "a10040gb")),
    GPU("RTX A6000 48GB", 48.0, 154.8, ("a6000", "rtxa6000")),
    GPU("RTX 6000 Ada 48GB", 48.0, 364.2, ("6000ada", "rtx6000ada")),
    GPU("L40S 48GB", 45.0, 362.0, ("l40s",)),
    GPU("A100 80GB", 80.0, 312.0, ("a10080", "a10080gb")),
    GPU("H100 80GB", 79.6, 989.0, ("h100", "h10080", "h100sxm")),
    GPU("H100 NVL 94GB", 93.6, 835.0, ("h100nvl", "h10094", "h10094gb")),
    GPU("H200 141GB", 140.4, 989.0, ("h200", "h200141")),
)

_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(g|gb|gib)\s*$", re.IGNORECASE)


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower().replace("nvidia", "").replace("geforce", ""))


def find_gpu(name: str) -> GPU:
    """A card by name ('4090', 'A100 80GB', 'h100') or a bare memory size ('24GB' = a 24 GiB card)."""
    m = _MEMORY_RE.match(name)
    if m:
        gib = float(m.group(1))
        if gib <= 0:
            raise ConfigError(f"--gpu {name!r}: memory must be positive", "Use e.g. --gpu 24GB or --gpu 4090.")
        return GPU(f"{gib:g} GiB GPU", gib)
    q = _norm(name)
    if not q:
        raise ConfigError(f"--gpu {name!r} names no GPU", "Use e.g. --gpu 4090, --gpu 'A100 80GB' or --gpu 24GB.")
    exact = [g for g in GPUS if q == _norm(g.name) or q in g.aliases]
    if len(exact) == 1:
        return exact[0]
    partial = [g for g in GPUS if q in _norm(g.name)]
    if len(partial) == 1:
        return partial[0]
    if partial:
        raise ConfigError(f"--gpu {name!r} is ambiguous: {', '.join(g.name for g in partial)}",
                          "Name one of them, or give a memory size like --gpu 24GB.")
    raise ConfigError(f"unknown --gpu {name!r}",
                      f"Use a memory size like --gpu 24GB or one of: {', '.join(g.name for g in GPUS)}.")
