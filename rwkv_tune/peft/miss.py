"""MiSS (formerly DiSHA: Bone / Bat): one shared block per Linear instead of two low-rank factors.

Modes, as HF peft's MiSS defines them (r = shard width along the input):
- bone (default, "shard sharing"): D [r, out], zero init. The input, right-padded with zeros to a
  multiple of r, is cut into r-wide shards that are summed, s ∈ R^r; output += s·D. As a weight:
  ΔW[o, i] = D[i mod r, o]. Trainable r·out (= LoRA(r/2) when in = out).
- mini: a block [r, mini_r] repeated out/mini_r times along the output gives the bone D; r·mini_r.
- bat (block-affine): W is cut into r×r blocks W_{a,b} (a: output block, b: input block) and
  ΔW_{a,b} = W_{a,b}·D_a + D_a, with D [out/r, r, r]: one r×r matrix per OUTPUT block (HF's
  indexing). RWKV-PEFT's G1 `disha` bat files index by INPUT block (D [in/r, r, r], ΔW = W_{a,b}·D_b + D_b);
  those are read with `extra: {bat_index: in}`. in and out must both be divisible by r.
Names: `disha`, `bone`, `bat` and `miss` all select this one implementation; `miss` is written.
"""

from __future__ import annotations

from math import gcd

import torch
import torch.nn as nn
import torch.nn.functional as F

from rwkv_tune.errors import ConfigError
from rwkv_tune.peft.base import AdaptedLinear, Method, Quantizer
from rwkv_tune.peft.config import PeftConfig


def bone_delta(d: torch.Tensor, in_features: int) -> torch.Tensor:
    """ΔW [out, in] with ΔW[o, i] = d[i mod r, o] for d [r, out]."""
    r = d.shape[0]
    return d.t()[:, torch.arange(in_features, device=d.device) % r]


def bat_delta(w: torch.Tensor, d: torch.Tensor, r: int, index: str = "out") -> torch.Tensor:
    """ΔW [out, in] with ΔW_{a,b} = W_{a,b}·D_k + D_k, k = a (index 'out') or b (index 'in')."""
    out_f, in_f = w.shape
    blocks = w.reshape(out_f // r, r, in_f // r, r).permute(0, 2, 1, 3)  # [a, b, r, r]
    dk = d[:, None] if index == "out" else d[None, :]
    return (blocks @ dk + dk).permute(0, 2, 1, 3).reshape(out_f, in_f)


def shard_sum(x: torch.Tensor, r: int) -> torch.Tensor:
    """Right-pad the last dim to a multiple of r and sum its r-wide shards: [..., in] → [..., r]."""
    pad = (-x.shape[-1]) % r
    if pad:
        x = F.pad(x, (0, pad))
    return x.reshape(*x.shape[:-1], -1, r).sum(-2)


class MissLinear(AdaptedLinear):
    """A frozen Linear plus a MiSS block `miss` (bone [r, out], mini [r, mini_r], bat [n, r, r])."""

    suffixes = ("miss",)

    def __init__(self, linear: nn.Linear, cfg: PeftConfig):
        super().__init__(linear)
        w = self.weight
        self.r, self.mode = cfg.r, cfg.mode
        self.bat_index = cfg.extra.get("bat_index", "out")
        self.miss = nn.Parameter(torch.zeros(miss_shape(cfg, self.out_features, self.in_features),
                                             dtype=w.dtype, device=w.device))
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()

    def block(self, dtype: torch.dtype) -> torch.Tensor:
        """The bone-form D [r, out] (mini repeats its block along the output)."""
        d = self.miss.to(dtype)
        return d.repeat(1, self.out_features // d.shape[1]) if self.mode == "mini" else d

    def delta_out(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.mode == "bat":
            return None
        return shard_sum(self.dropout(x), self.r) @ self.block(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode != "bat":
            return super().forward(x)
        w = self.frozen_weight(x.dtype)
        return F.linear(x, w + bat_delta(w, self.miss.to(x.dtype), self.r, self.bat_index))


def miss_shape(cfg: PeftConfig, out_features: int, in_features: int) -> tuple[int, ...]:
    r = cfg.r
    if cfg.mode == "bat":
        n = in_features // r if cfg.extra.get("bat_index", "out") == "in" else out_features // r
        return (n, r, r)
    if cfg.mode == "mini":
        return (r, cfg.mini_r)
    return (r, out_features)


class MiSS(Method):
    name = "miss"
    suffixes = ("miss",)

    def check(self, cfg: PeftConfig, module: str, out_features: int, in_features: int) -> None:
        r = cfg.r
        if cfg.mode == "bat" and (out_features % r or in_features % r):
            g = gcd(out_features, in_features)
            fit = max(d for d in range(1, min(r, g) + 1) if g % d == 0)
            raise ConfigError(f"method.mode = bat needs {module} [out, in] = [{out_features}, {in_features}] divisible "
                              f"by method.r = {r}", f"Use an r that divides both (e.g. r: {fit}), or mode: bone.")
        if r > in_features:
            raise ConfigError(f"method.r = {r} is wider than {module}'s input ({in_features})",
                              f"Use r ≤ {in_features}.")
        if cfg.mode == "mini" and (cfg.mini_r > out_features or out_features % cfg.mini_r):
            raise ConfigError(f"method.mini_r = {cfg.mini_r} must divide {module}'s output size {out_features}",
                              "Use a mini_r that divides n_embd and dim_ffn (e.g. 1, 16, 64).")

    def wrap(self, linear: nn.Linear, cfg: PeftConfig, init: dict[str, torch.Tensor]) -> AdaptedLinear:
        return MissLinear(linear, cfg)

    def count(self, cfg: PeftConfig, out_features: int, in_features: int) -> int:
        n = 1
        for d in miss_shape(cfg, out_features, in_features):
            n *= d
        return n

    def expected_shapes(self, cfg: PeftConfig, out_features: int, in_features: int) -> dict[str, tuple[int, ...]]:
        return {"miss": miss_shape(cfg, out_features, in_features)}

    def merge_weight(self, w: torch.Tensor, parts: dict[str, torch.Tensor], cfg: PeftConfig,
                     q: Quantizer) -> torch.Tensor:
        d = parts["miss"]
        wq = q(w)
        if cfg.mode == "bat":
            return wq + bat_delta(wq, d, cfg.r, cfg.extra.get("bat_index", "out"))
        if cfg.mode == "mini":
            d = d.repeat(1, w.shape[0] // d.shape[1])
        return wq + bone_delta(d, w.shape[1])
