"""Analytic peak GPU memory of one fine-tuning configuration, component by component.

The peak is the largest of three moments of a training step, each a sum of named components:
  loss      - forward done: weights, training state, saved activations, the [B*T, V] logits/loss;
  backward  - recomputing and back-propagating one layer: logits are gone, that layer's saved
              tensors, its gradients and any dequantised weight are alive;
  step      - DeepSpeed ZeRO-1/2 builds an fp32 gradient of its partition for the optimizer.
Parameter counts come from `ModelSpec.expected_shapes()`, so every version and size is covered by
the same code. Constants live in `calibration.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from math import ceil, prod

from rwkv_tune.estimate import calibration as cal
from rwkv_tune.estimate import deepembed
from rwkv_tune.estimate.config import Config
from rwkv_tune.spec import ModelSpec

COMPONENTS = ("base_weights", "embedding_head", "trainable_weights", "reference_weights", "gradients", "optimizer",
              "activations", "logits_loss", "workspace", "cuda_context", "allocator_overhead")

DESCRIPTIONS = {
    "base_weights": "frozen layer weights (Linears quantised if quant)",
    "embedding_head": "frozen emb + head (+ RWKV-7a/7b per-token tables; never quantised)",
    "trainable_weights": "trained parameters",
    "reference_weights": "dpo/grpo: starting values of trained dense tensors (the whole model under full)",
    "gradients": "their gradients",
    "optimizer": "AdamW moments (+ fp32 master under DeepSpeed)",
    "activations": "saved for backward (checkpoints with grad_cp)",
    "logits_loss": "logits [B*T, V] and the loss",
    "workspace": "dequantised weights, DeepSpeed buffers, states",
    "cuda_context": "CUDA context and library workspaces",
    "allocator_overhead": "caching-allocator fragmentation",
}
PHASES = {"loss": "while computing the loss", "backward": "during the backward pass",
          "step": "at the optimizer step", "generate": "while sampling a GRPO group (no gradients)"}

_LINEAR_RE = re.compile(r"^blocks\.\d+\.((?:att|ffn|qkv)\.\w+)\.weight$")


@dataclass(frozen=True)
class Params:
    """Parameter counts by the role they play in training."""

    total: int
    trainable: int
    adapter: int  # new tensors: LoRA A/B, MiSS D, time_state
    dense_trainable: int  # base tensors that are trained (train_parts, or everything for full)
    frozen_linear: int  # frozen Linear weights (the quantisable ones)
    frozen_linear_rows: int  # their output rows (int8 scales)
    frozen_linear_blocks: int  # their nf4 blocks
    frozen_other: int  # other frozen layer tensors (norms, mixes, low-rank matrices)
    frozen_emb_head: int
    largest_linear: int  # numel of the largest frozen Linear (one dequantised at a time)
    layer_params: int  # numel of one layer (ZeRO-3 gathers a few)
    target_numel_per_layer: int  # adapted Linear weights in one layer (bat rebuilds them)
    target_in_per_layer: int  # sum of the adapted Linears' input widths (their inputs are saved)
    targets_per_layer: int
    matmul_params: int  # weights used in matmuls per token (everything but emb); for FLOPs
    matmul_trainable: int  # dense trainable matmul weights (weight gradients cost FLOPs)
    deepembed_tables: int = 0  # RWKV-7a/7b per-token tables (in frozen_emb_head unless trained)


def _part_match(key: str, parts: tuple[str, ...]) -> bool:
    return any((p in key) if p in ("time", "ln") else deepembed.is_table(key) if p == "deepembed"
               else key == f"{p}.weight" for p in parts)


def _is_matmul(key: str, shape: tuple[int, ...]) -> bool:
    """Weights that multiply every token (Linears, low-rank matrices, head); not emb, vectors, r_k/u/decay."""
    return (key != "emb.weight" and len(shape) >= 2 and shape[:2] != (1, 1)
            and not key.endswith(("r_k", "time_faaaa", "time_decay")) and not deepembed.is_table(key))


_PARAMS_CACHE: dict[tuple, Params] = {}


def count_params(spec: ModelSpec, cfg: Config) -> Params:
    """Count parameters by role from the spec's tensor shapes (adapters from the targeted Linears)."""
    key = (spec.version, spec.variant, spec.n_layer, spec.n_embd, spec.head_size, spec.vocab_size, spec.dim_ffn,
           tuple(sorted(spec.lora_dims.items())), cfg.method, cfg.rank, cfg.mode, cfg.parts, cfg.targets)
    if key not in _PARAMS_CACHE:  # fit searches and knob trials ask for the same counts many times
        if len(_PARAMS_CACHE) > 256:
            _PARAMS_CACHE.clear()
        _PARAMS_CACHE[key] = _count_params(spec, cfg)
    return _PARAMS_CACHE[key]


def _count_params(spec: ModelSpec, cfg: Config) -> Params:
    shapes = spec.expected_shapes(time_state=False)
    targets = set(cfg.targets) if cfg.targets is not None else None
    c = dict(total=0, adapter=0, dense=0, flin=0, frows=0, fblocks=0, fother=0, femb=0, largest=0,
             tnumel=0, tin=0, ntargets=0, mm=0, mm_train=0, tables=0)
    for key, shape in shapes.items():
        n = prod(shape)
        c["total"] += n
        table = deepembed.is_table(key)
        c["tables"] += n if table else 0
        linear = _LINEAR_RE.match(key)
        lin_name = linear.group(1) if linear and len(shape) == 2 and not table else None
        matmul = _is_matmul(key, shape)
        if matmul:
            c["mm"] += n
        dense = cfg.method == "full" or _part_match(key, cfg.parts)
        if lin_name and cfg.is_adapter and (lin_name in targets if targets is not None
                                            else lin_name not in deepembed.OPT_IN_TARGETS):
            out_f, in_f = shape
            if key.startswith("blocks.0."):
                c["tnumel"] += n
                c["tin"] += in_f
                c["ntargets"] += 1
            if cfg.method in ("lora", "pissa"):
                c["adapter"] += cfg.rank * (in_f + out_f)
            elif cfg.mode == "bat":
                c["adapter"] += in_f * cfg.rank
            else:  # bone; mini (r·mini_r) is counted as bone, an upper bound
                c["adapter"] += cfg.rank * out_f
        if dense:
            c["dense"] += n
            if matmul:
                c["mm_train"] += n
        elif key in ("emb.weight", "head.weight") or table:
            c["femb"] += n
        elif lin_name:
            c["flin"] += n
            c["frows"] += shape[0]
            c["fblocks"] += ceil(n / cal.NF4_BLOCK)
            c["largest"] = max(c["largest"], n)
        else:
            c["fother"] += n
    if cfg.method == "state":
        c["adapter"] = spec.n_layer * spec.n_head * spec.head_size**2
    if cfg.method == "full":  # every layer's Linears are "targets" for the saved-input accounting
        c["tin"] = sum(s[1] for k, s in shapes.items()
                       if k.startswith("blocks.0.") and _LINEAR_RE.match(k) and len(s) == 2
                       and not deepembed.is_table(k))
    layer_params = sum(prod(s) for k, s in shapes.items() if k.startswith("blocks.1.") or
                       (spec.n_layer == 1 and k.startswith("blocks.0.")))
    return Params(
        total=c["total"], trainable=c["adapter"] + c["dense"], adapter=c["adapter"], dense_trainable=c["dense"],
        frozen_linear=c["flin"], frozen_linear_rows=c["frows"], frozen_linear_blocks=c["fblocks"],
        frozen_other=c["fother"], frozen_emb_head=c["femb"], largest_linear=c["largest"],
        layer_params=layer_params, target_numel_per_layer=c["tnumel"], target_in_per_layer=c["tin"],
        targets_per_layer=c["ntargets"], matmul_params=c["mm"], matmul_trainable=c["mm_train"],
        deepembed_tables=c["tables"],
    )


def act_bytes(cfg: Config) -> int:
    return 2 if cfg.precision in ("bf16", "fp16") else 4


def layer_tensors(spec: ModelSpec, cfg: Config, p: Params) -> list[tuple[str, float]]:
    """What one layer keeps for backward, as (tensor, bytes per token), for a frozen-weight base.

    A frozen Linear does not save its input (its weight needs no gradient); nonlinearities and
    products of two activations do. Adapters, dense training and the WKV kernel add their own.
    """
    C, F, H, N, b = spec.n_embd, spec.dim_ffn, spec.n_head, spec.head_size, act_bytes(cfg)
    d = spec.lora_dims
    if spec.version == 7:
        t = [
            ("ln1 input (block residual)", C * b), ("L2-norm input k*k_k", C * b),
            ("k*(1+(a-1)*k_a) operands", 2 * C * b), ("value-residual lerp operands", 2 * C * b),
            ("a = sigmoid(a0+...) output", C * b), ("tanh(x_w@w1) output", d.get("w", 0) * b),
            ("sigmoid(x_g@g1) output", d.get("g", 0) * b), ("WKV inputs r, w, k, v, -kk, kk*a", 6 * C * b),
            ("WKV fp32 state checkpoint every 16 steps", H * N * N / cal.WKV7_CHUNK * 4),
            ("WKV fp32 S*a buffer", C * 4), ("GroupNorm input (WKV output)", C * b), ("o, g operands of o*g", 2 * C * b),
            ("ln2 input", C * b), ("FFN hidden relu(k)", F * b),
        ]
        dense_time = 0
    else:
        t = [("ln1 input (block residual)", C * b), ("SiLU gate input", C * b), ("WKV inputs r, k, v", 3 * C * b)]
        if spec.version == 6:
            t += [("token-shift delta", C * b), ("tanh(x@maa_w1) output", 5 * d.get("maa", 0) * b),
                  ("mix coefficients maa+m (5)", 5 * C * b), ("tanh(x_w@decay_w1) output", d.get("decay", 0) * b),
                  ("decay exp(w) in fp32", C * 4)]
        t += [("GroupNorm input (WKV output)", C * b), ("o, g operands of o*g", 2 * C * b), ("ln2 input", C * b),
              ("FFN hidden relu(k)", F * b), ("sigmoid(r) output", C * b), ("FFN value output", C * b)]
        dense_time = (3 if spec.version == 6 else 2) * C + C  # inputs that time-mix vector gradients need
    if cfg.method in ("lora", "pissa"):
        t += [("adapted Linears' inputs", p.target_in_per_layer * b), ("LoRA A@x", p.targets_per_layer * cfg.rank * b)]
    elif cfg.method == "miss" and cfg.mode == "bat":
        t += [("adapted Linears' inputs", p.target_in_per_layer * b)]
    elif cfg.method == "miss":
        t += [("bone shard sums", p.targets_per_layer * cfg.rank * b)]
    elif cfg.method == "full":
        t += [("Linear inputs (weight gradients)", p.target_in_per_layer * b),
              ("mix and low-rank inputs", (6 * C if spec.version == 7 else dense_time) * b)]
    if "time" in cfg.parts and dense_time:
        t += [("time-mix inputs (trained time_* vectors)", dense_time * b)]
    return [(name, v * cal.ACTIVATION_SCALE) for name, v in t if v]


def _layer_fixed_bytes(cfg: Config, p: Params) -> float:
    """Per-layer saved bytes that do not scale with tokens: bat keeps each rebuilt W + dW for backward."""
    if cfg.method == "miss" and cfg.mode == "bat":
        return p.target_numel_per_layer * act_bytes(cfg)
    return 0.0


def _frozen_linear_bytes(cfg: Config, p: Params) -> float:
    if cfg.quant == "int8":
        return p.frozen_linear * cal.INT8_BYTES + p.frozen_linear_rows * cal.INT8_ROW_SCALE_BYTES
    if cfg.quant in ("nf4", "fp4"):  # both are bitsandbytes 4-bit blocks of 64 with one absmax each
        return p.frozen_linear * cal.NF4_BYTES + p.frozen_linear_blocks * cal.NF4_ABSMAX_BYTES
    return p.frozen_linear * act_bytes(cfg)


@dataclass(frozen=True)
class VRAM:
    """Peak GPU memory per device: `breakdown` (GiB by component) sums to `total_gib`."""

    total_gib: float
    breakdown: dict[str, float]
    peak_phase: str  # loss | backward | step
    phases: dict[str, float]  # total GiB at each moment
    params: Params
    tokens_per_step: int  # micro_bsz x ctx_len per device (what the activations hold, with infctx: chunk)
    cpu_offload_gib: float = 0.0
    layer_detail: list[tuple[str, float]] = field(default_factory=list)  # (tensor, GiB for the micro-batch)


def vram(spec: ModelSpec, cfg: Config, params: Params | None = None) -> VRAM:
    """Estimate the peak GPU memory of one device for `cfg` on a model of shape `spec`.

    `params` may be passed when only micro_bsz/ctx_len differ from a previous call (searches).
    """
    p = params or count_params(spec, cfg)
    b = act_bytes(cfg)
    n = cfg.devices
    stage = cfg.zero_stage

    frozen_blocks = _frozen_linear_bytes(cfg, p) + p.frozen_other * b
    frozen_emb = p.frozen_emb_head * b
    cpu = 0.0
    if cfg.deepspeed:
        w, g, o = p.trainable * cal.DS_WEIGHT_BYTES, p.trainable * cal.DS_GRAD_BYTES, p.trainable * cal.DS_OPTIMIZER_BYTES
        o /= n
        if stage >= 2:
            g /= n
        if cfg.offload:  # optimizer states, fp32 master and the gradient partition live in CPU RAM
            cpu += o + g + p.trainable * cal.DS_STEP_FP32_GRAD_BYTES / n
            o = g = 0.0
        if stage == 3:
            frozen_blocks, frozen_emb, w = frozen_blocks / n, frozen_emb / n, w / n
            if cfg.offload:
                cpu += frozen_blocks + frozen_emb + w
                frozen_blocks = frozen_emb = w = 0.0
    else:
        w = p.trainable * cal.SINGLE_WEIGHT_BYTES
        g = p.trainable * cal.SINGLE_GRAD_BYTES
        o = p.trainable * cal.SINGLE_OPTIMIZER_BYTES

    T = min(cfg.chunk_ctx, cfg.ctx_len) if cfg.train_type == "infctx" else cfg.ctx_len
    if cfg.objective == "grpo":  # the prompt (up to ctx_len) and its sampled completion
        T += cfg.max_new_tokens
    if spec.version == 7:
        T = ceil(T / cal.WKV7_CHUNK) * cal.WKV7_CHUNK  # the v7 kernel needs T % 16 == 0: pad
    BT = cfg.rows * T
    C, F, L = spec.n_embd, spec.dim_ffn, spec.n_layer

    tensors = layer_tensors(spec, cfg, p) + deepembed.layer_tensors(spec, b, cfg.ctx_len)
    per_layer = sum(v for _, v in tensors) * BT + _layer_fixed_bytes(cfg, p)
    checkpoint = C * b * BT  # a checkpointed block keeps only its input
    outside = (2 * C + (C if spec.version == 7 else 0)) * b * BT  # ln_out/head input (+ v7 v_first)
    stored = L * (checkpoint if cfg.grad_cp else per_layer) + outside
    logit_rows = min(BT, cal.CE_CHUNK_TOKENS) if cfg.chunked_ce else BT
    logits = logit_rows * spec.vocab_size * cal.LOGIT_BYTES
    backward_ws = (cal.BACKWARD_C * C + cal.BACKWARD_F * F) * b * BT
    recompute = per_layer if cfg.grad_cp else 0.0
    dequant = p.largest_linear * b if cfg.quant != "none" else 0.0

    common_ws = 0.0
    if cfg.deepspeed and stage < 3:
        common_ws += min(p.trainable, cal.DS_BUCKET_ELEMENTS) * cal.DS_GRAD_BYTES
    if stage == 3:
        common_ws += cal.ZERO3_GATHERED_LAYERS * p.layer_params * b + spec.vocab_size * C * b
    if cfg.train_type == "infctx":  # carried token-shift (2 per layer) and fp32 WKV states
        common_ws += L * cfg.micro_bsz * (2 * C * b + spec.n_head * spec.head_size**2 * 4)
        common_ws += deepembed.carried_cache_bytes(spec, cfg.micro_bsz, cfg.ctx_len, b)

    # the reference policy keeps the trained dense tensors' starting values (fp32): all weights under full
    reference = p.dense_trainable * 4 / (n if stage == 3 else 1) if cfg.keeps_reference_copy else 0.0
    static = {"base_weights": frozen_blocks, "embedding_head": frozen_emb, "trainable_weights": w,
              "reference_weights": reference,
              "gradients": g, "optimizer": o, "cuda_context": cal.CUDA_CONTEXT_GIB * cal.GIB}
    moments = {
        "loss": {"activations": stored, "logits_loss": logits, "workspace": common_ws},
        "backward": {"activations": stored + recompute + backward_ws, "logits_loss": 0.0,
                     "workspace": common_ws + dequant},
    }
    if cfg.objective == "grpo":  # G recurrent states and G rows of logits, no activations kept
        states = L * cfg.group_size * (2 * C * b + spec.n_head * spec.head_size**2 * 4)
        moments["generate"] = {"activations": 0.0, "logits_loss": cfg.group_size * spec.vocab_size * 4,
                               "workspace": common_ws + states + dequant}
    if cfg.deepspeed and stage < 3 and not cfg.offload:
        moments["step"] = {"activations": 0.0, "logits_loss": 0.0,
                           "workspace": common_ws + p.trainable * cal.DS_STEP_FP32_GRAD_BYTES / n}

    totals: dict[str, dict[str, float]] = {}
    for phase, dyn in moments.items():
        comp = {**static, **dyn}
        comp["allocator_overhead"] = cal.ALLOCATOR_FRACTION * sum(dyn.values())
        totals[phase] = {k: comp[k] / cal.GIB for k in COMPONENTS}
    peak = max(totals, key=lambda k: sum(totals[k].values()))
    breakdown = totals[peak]
    detail = [("layer checkpoints (block inputs)" if cfg.grad_cp else "all layers' saved tensors",
               (L * (checkpoint if cfg.grad_cp else per_layer)) / cal.GIB)]
    detail += [(f"one layer: {name}", v * BT / cal.GIB) for name, v in tensors]
    return VRAM(total_gib=sum(breakdown.values()), breakdown=breakdown, peak_phase=peak,
                phases={k: sum(v.values()) for k, v in totals.items()}, params=p, tokens_per_step=BT,
                cpu_offload_gib=cpu / cal.GIB, layer_detail=detail)
