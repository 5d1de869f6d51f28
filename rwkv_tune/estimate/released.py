"""The released RWKV models' shapes, so `estimate --size 1.5B` works without the file (rwkv-architecture.md §6)."""

from __future__ import annotations

from math import prod

from rwkv_tune.errors import ConfigError
from rwkv_tune.spec import ModelSpec, expected_shapes

VOCAB = 65536
HEAD_SIZE = 64

# version -> size name -> (n_layer, n_embd, dim_ffn, low-rank dims); layer-0 v0/v1/v2 absent (official files).
RELEASED: dict[int, dict[str, tuple[int, int, int, dict[str, int]]]] = {
    7: {
        "0.1B": (12, 768, 3072, {"w": 64, "a": 64, "v": 32, "g": 128}),
        "0.4B": (24, 1024, 4096, {"w": 64, "a": 64, "v": 32, "g": 128}),
        "1.5B": (24, 2048, 8192, {"w": 96, "a": 96, "v": 64, "g": 256}),
        "2.9B": (32, 2560, 10240, {"w": 96, "a": 96, "v": 64, "g": 320}),
        "7.2B": (32, 4096, 16384, {"w": 128, "a": 128, "v": 96, "g": 480}),
        "13.3B": (61, 4096, 16384, {"w": 192, "a": 192, "v": 128, "g": 384}),
    },
    6: {
        "1.6B": (24, 2048, 7168, {"maa": 32, "decay": 64}),
        "3B": (32, 2560, 8960, {"maa": 32, "decay": 64}),
        "7B": (32, 4096, 14336, {"maa": 64, "decay": 128}),
        "14B": (61, 4096, 14336, {"maa": 64, "decay": 128}),
    },
    5: {
        "0.4B": (24, 1024, 3584, {}),
        "1.5B": (24, 2048, 7168, {}),
        "3B": (32, 2560, 8960, {}),
        "7B": (32, 4096, 14336, {}),
    },
}

# Names people use for the same files (RWKV-PEFT's tables call v7 2.9B "3B"; g0 7.2B is "7B").
ALIASES: dict[int, dict[str, str]] = {
    7: {"3B": "2.9B", "7B": "7.2B", "13B": "13.3B", "14B": "13.3B"},
    6: {"1.5B": "1.6B", "2.9B": "3B", "3.1B": "3B", "7.6B": "7B"},
    5: {"0.46B": "0.4B", "7.5B": "7B"},
}


def _canonical_size(size: str) -> str:
    s = size.strip().upper().removesuffix("B")
    try:
        return f"{float(s):g}B"
    except ValueError:
        return size.strip()


def released_spec(size: str, version: int = 7) -> ModelSpec:
    """The spec of a released model by size name ('1.5B', '7B', …); ConfigError lists the valid ones."""
    if version not in RELEASED:
        raise ConfigError(f"--version {version} is not an RWKV version rwkv-tune supports", "Use 5, 6 or 7.")
    sizes = RELEASED[version]
    name = _canonical_size(size)
    name = ALIASES[version].get(name, name)
    if name not in sizes:
        raise ConfigError(f"unknown --size {size!r} for RWKV-{version}",
                          f"Valid sizes: {', '.join(sizes)} (or pass --model M.pth).")
    n_layer, n_embd, dim_ffn, dims = sizes[name]
    shapes = expected_shapes(version, n_layer, n_embd, HEAD_SIZE, VOCAB, dim_ffn, dims)
    return ModelSpec(version=version, n_layer=n_layer, n_embd=n_embd, n_head=n_embd // HEAD_SIZE,
                     head_size=HEAD_SIZE, vocab_size=VOCAB, dim_ffn=dim_ffn, lora_dims=dict(dims),
                     dtype="bfloat16", params=sum(prod(s) for s in shapes.values()))
