"""What RWKV-7a (DeepEmbed) and 7b (DeepEmbed Attention) add to the memory estimate (reference/rwkv7-deepembed.md).

Parameters: the per-token tables (V × 1024 per layer for 7a; plus V × (256 + C) for 7b) are counted from
`ModelSpec.expected_shapes()` like every other tensor; vram.py books them with emb/head (looked up, never
quantised, never a matmul). Here: the activations a layer saves for them, and 7b's attention cache.
"""

from __future__ import annotations

from rwkv_tune.estimate import calibration as cal
from rwkv_tune.peft.config import DEEPEMBED_TARGETS
from rwkv_tune.spec import DE_RANK, DEA_DIM, DEA_RANK, DEEPEMBED_TABLES, ModelSpec

OPT_IN_TARGETS = DEEPEMBED_TARGETS  # Linears an adapter takes only when `targets` names them


def is_table(key: str) -> bool:
    return key.endswith(DEEPEMBED_TABLES)


def layer_tensors(spec: ModelSpec, b: int, context: int) -> list[tuple[str, float]]:
    """(tensor, bytes per token) one 7a/7b layer saves for backward; `context`: tokens a query attends to."""
    if not spec.variant:
        return []
    C, F = spec.n_embd, spec.dim_ffn
    t = [("DeepEmbed token matrix S = s_emb + s_emb_x·e", DE_RANK * DE_RANK * b),
         ("DeepEmbed x@s1 and FFN gate operands", (DE_RANK + 2 * F) * b)]
    if spec.variant == "7b":
        t += [("DEA k1/v1 projections and table rows", (2 * DEA_RANK + DEA_DIM + C) * b),
              ("DEA q, k, v before and after LayerNorm", 2 * (2 * DEA_DIM + C) * b),
              ("DEA softmax scores and probabilities (fp32)", 2 * context * 4)]
    return [(name, v * cal.ACTIVATION_SCALE) for name, v in t]


def carried_cache_bytes(spec: ModelSpec, micro_bsz: int, ctx_len: int, b: int) -> float:
    """7b with infctx: the k1/v1 cache of every earlier token of the sequence, per layer."""
    if spec.variant != "7b":
        return 0.0
    return spec.n_layer * micro_bsz * ctx_len * 2 * DEA_RANK * b
