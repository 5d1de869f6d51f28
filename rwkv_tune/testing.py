"""Tiny official-format RWKV models with random, well-scaled weights, for tests, docs and the demo.

The files are exactly what RWKV-LM writes (same keys, order and shapes), so every runtime that
loads a released model loads these too; the numbers are random but in the ranges a trained model
has (lerp coefficients in [0, 1], decays that neither vanish nor explode, unit-ish LayerNorms).
"""

from __future__ import annotations

from pathlib import Path

import torch

from rwkv_tune.spec import expected_shapes


def default_dim_ffn(version: int, n_embd: int) -> int:
    return 4 * n_embd if version == 7 else int(3.5 * n_embd) // 32 * 32


def default_lora_dims(version: int, n_embd: int) -> dict[str, int]:
    """RWKV-LM's (2025-07) formulas for new v7 models; RWKV-LM's fixed 32/64 for v6."""
    if version == 7:
        def r(f: float) -> int:
            return max(32, round(f * n_embd**0.5 / 32) * 32)

        return {"w": r(2.5), "a": r(2.5), "v": r(1.7), "g": r(5.0)}
    if version == 6:
        return {"maa": 64 if n_embd == 4096 else 32, "decay": 128 if n_embd == 4096 else 64}
    return {}


def _init(key: str, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    parts = key.split(".")
    name = parts[-1]

    def randn(scale: float) -> torch.Tensor:
        return torch.randn(shape, generator=g) * scale

    def rand(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(shape, generator=g)

    if key == "emb.weight" or key.endswith(("s_emb.weight", "k_emb.weight", "v_emb.weight")):
        return randn(1.0)  # the token embedding and the 7a/7b per-token tables
    if name == "weight" and len(shape) == 1:  # LayerNorm / GroupNorm scale
        return 1.0 + randn(0.1)
    if name == "bias":
        return randn(0.1)
    if name == "weight":  # Linear [out, in]
        return randn(1.0 / shape[1] ** 0.5)
    if name.startswith(("x_", "time_maa_", "time_mix_")) and (shape[:2] == (1, 1) or len(shape) == 1):
        return rand(0.0, 1.0)  # token-shift lerp coefficients
    if name == "s0":  # 7a FFN gate bias: around 1, so the gate starts near the plain x070 FFN
        return 1.0 + randn(0.2)
    if name == "w0":
        return rand(-3.0, 1.0)
    if name == "time_decay":
        return rand(-5.0, 0.5)
    if name in ("a0", "v0"):
        return randn(0.5)
    if name == "k_k":
        return rand(0.7, 1.0)
    if name == "k_a":
        return rand(0.8, 1.2)
    if name in ("r_k", "time_faaaa"):
        return randn(0.3)
    if name == "time_state":
        return randn(0.1)
    if name == "time_maa_w2":
        return randn(0.1 / shape[1] ** 0.5)
    if len(shape) == 2:  # low-rank [in, out]
        return randn(0.5 / shape[0] ** 0.5)
    raise AssertionError(f"no init rule for {key} {shape}")


def make_state_dict(version: int = 7, n_layer: int = 2, n_embd: int = 128, vocab_size: int = 1000,
                    head_size: int = 64, *, seed: int = 0, dtype: torch.dtype = torch.float32,
                    layer0_v: bool = True, time_state: bool = False, dim_ffn: int | None = None,
                    lora_dims: dict[str, int] | None = None, variant: str = "",
                    variant_vec3d: bool = False) -> dict[str, torch.Tensor]:
    """A random official-format state dict (keys, order and shapes exactly as RWKV-LM writes).

    variant "7a" / "7b" (version 7 only) adds the DeepEmbed / DeepEmbed Attention keys of
    reference/rwkv7-deepembed.md to each layer (`variant_vec3d`: s0/x_q/x_k/x_v stored [1, 1, n]).
    """
    if version not in (5, 6, 7):
        raise ValueError(f"version must be 5, 6 or 7, not {version}")
    if n_embd % head_size:
        raise ValueError(f"n_embd {n_embd} must be a multiple of head_size {head_size}")
    shapes = expected_shapes(version, n_layer, n_embd, head_size, vocab_size,
                             dim_ffn or default_dim_ffn(version, n_embd), lora_dims or default_lora_dims(version, n_embd),
                             layer0_v=layer0_v and version == 7, time_state=time_state, variant=variant,
                             variant_vec3d=variant_vec3d)
    g = torch.Generator().manual_seed(seed)
    return {k: _init(k, s, g).to(dtype).contiguous() for k, s in shapes.items()}


def make_model(path: str | Path, version: int = 7, n_layer: int = 2, n_embd: int = 128, vocab_size: int = 1000,
               head_size: int = 64, seed: int = 0, dtype: torch.dtype = torch.float32, layer0_v: bool = True,
               **kwargs) -> Path:
    """Write a tiny official-format `.pth` model to `path` and return the path."""
    from rwkv_tune.checkpoint import save_state_dict

    sd = make_state_dict(version, n_layer, n_embd, vocab_size, head_size, seed=seed, dtype=dtype,
                         layer0_v=layer0_v, **kwargs)
    return save_state_dict(sd, Path(path))


def _main(argv: list[str] | None = None) -> None:
    """`python -m rwkv_tune.testing OUT.pth [--version 7] [--n-layer 2] [--n-embd 128] [--vocab-size 1000]`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m rwkv_tune.testing", description="Write a tiny random RWKV model.")
    parser.add_argument("out")
    parser.add_argument("--version", type=int, default=7, choices=(5, 6, 7))
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--vocab-size", type=int, default=1000)
    parser.add_argument("--head-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", default="", choices=("", "7a", "7b"), help="RWKV-7 DeepEmbed variant")
    args = parser.parse_args(argv)
    path = make_model(args.out, version=args.version, n_layer=args.n_layer, n_embd=args.n_embd,
                      vocab_size=args.vocab_size, head_size=args.head_size, seed=args.seed, variant=args.variant)
    print(f"wrote {path}")


if __name__ == "__main__":
    _main()
