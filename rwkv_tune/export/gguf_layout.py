"""How an official RWKV-6/7 state dict maps onto llama.cpp's GGUF model (architectures `rwkv6`, `rwkv7`).

Facts learned from llama.cpp's converter and loader (`convert_hf_to_gguf.py`, `src/models/rwkv{6,7}.cpp`):
- Names follow gguf-py's tensor names (`token_embd`, `blk.N.time_mix_key`, ...); ln0 is
  `token_embd_norm`, ln1/ln2 are `attn_norm`/`attn_norm_2`, ln_out/head are `output_norm`/`output`.
- GGUF shapes are written in numpy order (ggml's reversed): Linear weights [out, in] go as stored; the
  low-rank matrices, stored [in, out], are transposed; v6's `time_maa_w2` [5, Dm, C] becomes [5, C, Dm].
- The token-shift coefficients are fused: v7 x_r,x_w,x_k,x_v,x_a,x_g → `time_mix_lerp_fused` [6, 1, 1, C];
  v6 time_maa_w,k,v,r,g → [5, 1, 1, C]. Other [1, 1, C] vectors become [C]; v7 `r_k` [H, N] is flattened.
- v7 layer 0's v0/v1/v2 are unused: llama.cpp requires them with the ICLR rank, so its converter drops
  any stored ones and writes copies of a0/a1/a2 in their place. We do the same.
- v6 is written with `rescale_every_n_layers = 0`, so no weight is rescaled (llama.cpp would otherwise
  halve the residual stream every n layers and expect divided weights).
- Tensors llama.cpp keeps in f32 whatever the file type: 1-D ones, norms, the fused lerps, time_mix_w1/w2,
  time_mix_decay_w1/w2 and time_mix_first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from rwkv_tune.errors import UnsupportedModelError
from rwkv_tune.spec import ModelSpec

ARCHS = {"x070": "rwkv7", "x060": "rwkv6"}
CONTEXT_LENGTH = 1048576  # what llama.cpp's converter writes: RWKV has no context limit
LAYER_NORM_EPS = 1e-5
_ALWAYS_F32 = ("time_mix_w1.weight", "time_mix_w2.weight", "time_mix_decay_w1.weight", "time_mix_decay_w2.weight",
               "time_mix_first.weight", "time_mix_lerp_fused.weight")


@dataclass(frozen=True)
class GGUFTensor:
    """One GGUF tensor: which official keys it is built from and how (`build` gets them as fp32)."""

    name: str
    sources: tuple[str, ...]
    build: Callable[..., torch.Tensor]

    @property
    def keep_f32(self) -> bool:
        """llama.cpp expects this tensor in f32 whatever the file's dtype."""
        return self.name.endswith(_ALWAYS_F32) or "norm" in self.name or self.name.endswith(".bias")

    def shape(self, source_shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
        """The output shape (numpy order), worked out on meta tensors without reading any data."""
        metas = [torch.empty(source_shapes[k], device="meta") for k in self.sources]
        return tuple(self.build(*metas).shape)


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def _vector(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1)


def _transposed(t: torch.Tensor) -> torch.Tensor:
    return t.transpose(0, 1)


def _lerps(*ts: torch.Tensor) -> torch.Tensor:
    return torch.stack([t.reshape(1, 1, -1) for t in ts])


def _v6_maa_w2(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 2, 1)


def arch_name(spec: ModelSpec) -> str:
    """llama.cpp's architecture name for the model, or an error naming why there is none."""
    if spec.arch == "x052":
        raise UnsupportedModelError("RWKV-5 (x052) models cannot be exported to GGUF: llama.cpp has no RWKV-5 "
                                    "architecture (it runs RWKV-6 and RWKV-7)",
                                    "Export an RWKV-6 (x060) or RWKV-7 (x070) model.")
    if getattr(spec, "variant", ""):
        raise UnsupportedModelError(f"{spec.variant_name} models cannot be exported to GGUF: llama.cpp has no "
                                    "architecture for the DeepEmbed tables", "Export a plain RWKV-6 (x060) or "
                                    "RWKV-7 (x070) model.")
    if spec.arch not in ARCHS:
        raise UnsupportedModelError(f"{spec.arch} models cannot be exported to GGUF (llama.cpp runs plain x060 and "
                                    "x070 only)", "Export an RWKV-6 (x060) or RWKV-7 (x070) model.")
    if spec.time_state:
        raise UnsupportedModelError("the model holds a trained initial state (att.time_state), which llama.cpp's "
                                    "RWKV architectures cannot load", "Export the model without the state.")
    return ARCHS[spec.arch]


def tensor_plan(spec: ModelSpec, keys: list[str]) -> list[GGUFTensor]:
    """Every GGUF tensor of the model, in write order; refuses a key the plan does not place."""
    arch_name(spec)
    plan = [GGUFTensor("token_embd.weight", ("emb.weight",), _same),
            GGUFTensor("token_embd_norm.weight", ("blocks.0.ln0.weight",), _same),
            GGUFTensor("token_embd_norm.bias", ("blocks.0.ln0.bias",), _same)]
    for i in range(spec.n_layer):
        plan += _block_plan(spec, i)
    plan += [GGUFTensor("output_norm.weight", ("ln_out.weight",), _same),
             GGUFTensor("output_norm.bias", ("ln_out.bias",), _same),
             GGUFTensor("output.weight", ("head.weight",), _same)]
    used = {k for t in plan for k in t.sources}
    unused_ok = {"blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"}  # unused by the math; see above
    left = [k for k in keys if k not in used and k not in unused_ok]
    if left:
        raise UnsupportedModelError(f"the model has a tensor '{left[0]}' that llama.cpp's {ARCHS[spec.arch]} has no "
                                    "place for", "Export a plain official RWKV-6/7 model.")
    return plan


def _block_plan(spec: ModelSpec, i: int) -> list[GGUFTensor]:
    p, b = f"blocks.{i}.", f"blk.{i}."
    a, f = p + "att.", p + "ffn."
    plan = [GGUFTensor(b + "attn_norm.weight", (p + "ln1.weight",), _same),
            GGUFTensor(b + "attn_norm.bias", (p + "ln1.bias",), _same),
            GGUFTensor(b + "attn_norm_2.weight", (p + "ln2.weight",), _same),
            GGUFTensor(b + "attn_norm_2.bias", (p + "ln2.bias",), _same)]
    if spec.version == 7:
        plan.append(GGUFTensor(b + "time_mix_lerp_fused.weight",
                               tuple(a + x for x in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g")), _lerps))
        v_from = "a" if i == 0 else "v"  # layer 0: llama.cpp wants v0/v1/v2 with a's shapes; they are unused
        for mine, theirs in (("w", "w"), ("a", "a"), ("v", v_from)):
            plan += [GGUFTensor(b + f"time_mix_{mine}0.weight", (a + f"{theirs}0",), _vector),
                     GGUFTensor(b + f"time_mix_{mine}1.weight", (a + f"{theirs}1",), _transposed),
                     GGUFTensor(b + f"time_mix_{mine}2.weight", (a + f"{theirs}2",), _transposed)]
        plan += [GGUFTensor(b + "time_mix_g1.weight", (a + "g1",), _transposed),
                 GGUFTensor(b + "time_mix_g2.weight", (a + "g2",), _transposed),
                 GGUFTensor(b + "time_mix_k_k.weight", (a + "k_k",), _vector),
                 GGUFTensor(b + "time_mix_k_a.weight", (a + "k_a",), _vector),
                 GGUFTensor(b + "time_mix_r_k.weight", (a + "r_k",), _vector)]
        linears = ("receptance", "key", "value", "output")
        ffn = [GGUFTensor(b + "channel_mix_lerp_k.weight", (f + "x_k",), _vector)]
    else:
        plan += [GGUFTensor(b + "time_mix_lerp_x.weight", (a + "time_maa_x",), _vector),
                 GGUFTensor(b + "time_mix_lerp_fused.weight",
                            tuple(a + f"time_maa_{x}" for x in "wkvrg"), _lerps),
                 GGUFTensor(b + "time_mix_w1.weight", (a + "time_maa_w1",), _transposed),
                 GGUFTensor(b + "time_mix_w2.weight", (a + "time_maa_w2",), _v6_maa_w2),
                 GGUFTensor(b + "time_mix_decay.weight", (a + "time_decay",), _vector),
                 GGUFTensor(b + "time_mix_decay_w1.weight", (a + "time_decay_w1",), _transposed),
                 GGUFTensor(b + "time_mix_decay_w2.weight", (a + "time_decay_w2",), _transposed),
                 GGUFTensor(b + "time_mix_first.weight", (a + "time_faaaa",), _same)]
        linears = ("receptance", "key", "value", "gate", "output")
        ffn = [GGUFTensor(b + "channel_mix_lerp_k.weight", (f + "time_maa_k",), _vector),
               GGUFTensor(b + "channel_mix_lerp_r.weight", (f + "time_maa_r",), _vector),
               GGUFTensor(b + "channel_mix_receptance.weight", (f + "receptance.weight",), _same)]
    plan += [GGUFTensor(b + f"time_mix_{name}.weight", (a + f"{name}.weight",), _same) for name in linears]
    plan += [GGUFTensor(b + "time_mix_ln.weight", (a + "ln_x.weight",), _same),
             GGUFTensor(b + "time_mix_ln.bias", (a + "ln_x.bias",), _same)]
    plan += ffn
    plan += [GGUFTensor(b + "channel_mix_key.weight", (f + "key.weight",), _same),
             GGUFTensor(b + "channel_mix_value.weight", (f + "value.weight",), _same)]
    return plan


def arch_metadata(spec: ModelSpec) -> dict[str, Any]:
    """The hyper-parameters llama.cpp reads for this model, as {GGUFWriter method: value}."""
    meta: dict[str, Any] = {
        "add_context_length": CONTEXT_LENGTH, "add_embedding_length": spec.n_embd, "add_block_count": spec.n_layer,
        "add_feed_forward_length": spec.dim_ffn, "add_head_count": 0,  # required by llama.cpp, unused
        "add_layer_norm_eps": LAYER_NORM_EPS, "add_wkv_head_size": spec.head_size,
    }
    dims = spec.lora_dims
    if spec.version == 7:
        meta.update({"add_decay_lora_rank": dims["w"], "add_iclr_lora_rank": dims["a"],
                     "add_value_residual_mix_lora_rank": dims.get("v") or dims["a"],
                     "add_gate_lora_rank": dims["g"]})
    else:
        meta.update({"add_rescale_every_n_layers": 0, "add_time_mix_extra_dim": dims["maa"],
                     "add_time_decay_extra_dim": dims["decay"]})
    return meta
