"""Every tunable constant of the estimator, in one place, with the measurement it came from.

Until we have our own GPU measurements, the sanity anchor is RWKV-PEFT's published VRAM tables
(`shared/reference/rwkv-peft.md` §8: RTX 4090, bf16, deepspeed_stage_1, ctx_len 1024,
micro_bsz 1, LoRA r=64 / DiSHA r=32; v7 0.1B–2.9B bf16/int8/nf4 and v6 1.6B–7B). Our estimate
must land between half of those peaks and the peaks themselves, because we aim to use less.
Values not derived from a measurement say "first principles" and why.

OUR MEASUREMENTS: when a GPU is lent, measure `torch.cuda.max_memory_reserved` over a matrix of
configurations, record them in `docs/gpu-results.md`, refit the constants marked "fit" below and
note the run next to each one. The goal is |estimate - measured| <= 10% everywhere.
"""

from __future__ import annotations

GIB = 1024**3

# --- fixed per-process overhead ---------------------------------------------------------------
# CUDA context + cuBLAS/cuDNN workspaces of a torch process. First principles: torch 2.x on Ada/Hopper
# reports ~0.3-0.5 GiB in nvidia-smi before any tensor exists. RWKV-PEFT's v7 0.1B peaks
# (2.4-2.7 GB for a 0.38 GiB model) bound it from above. `max_memory_reserved` excludes it, so
# compare (total - cuda_context) against our own measurements. Fit.
CUDA_CONTEXT_GIB = 0.45

# Caching-allocator fragmentation, as a fraction of the transient allocations (activations, logits,
# workspaces). First principles: PyTorch's reserved/allocated ratio is typically 1.05-1.15 for
# training loops. Fit.
ALLOCATOR_FRACTION = 0.10

# --- trainable parameters ----------------------------------------------------------------------
# Bytes per trainable parameter. Single process (our plain loop): fp32 weight, fp32 grad, AdamW m
# and v in fp32 (first principles: adapters are small, so they are kept in fp32 for exact updates).
SINGLE_WEIGHT_BYTES = 4
SINGLE_GRAD_BYTES = 4
SINGLE_OPTIMIZER_BYTES = 8
# DeepSpeed bf16: bf16 weight and grad, fp32 master + m + v (12 B) sharded by ZeRO; ZeRO-1/2 also
# build an fp32 gradient of the local partition at step time (DeepSpeed's ZeRO optimizer design).
DS_WEIGHT_BYTES = 2
DS_GRAD_BYTES = 2
DS_OPTIMIZER_BYTES = 12
DS_STEP_FP32_GRAD_BYTES = 4
# Reduce bucket (elements, bf16) that ZeRO allocates, capped by the trainable numel. Lightning's and
# RWKV-PEFT's logged default is 2e8 elements. First principles.
DS_BUCKET_ELEMENTS = 200_000_000
# ZeRO-3 gathers about this many layers' parameters ahead of use (prefetch). First principles.
ZERO3_GATHERED_LAYERS = 2

# --- quantised frozen weights ------------------------------------------------------------------
# int8: one byte per weight + one fp32 scale per output row (row-wise absmax).
INT8_BYTES = 1.0
INT8_ROW_SCALE_BYTES = 4
# nf4: half a byte per weight + one fp32 absmax per block of 64 (bitsandbytes' default block size;
# double quantisation of absmax is not assumed).
NF4_BYTES = 0.5
NF4_BLOCK = 64
NF4_ABSMAX_BYTES = 4

# --- activations ---------------------------------------------------------------------------------
# Multiplier on the analytic per-layer saved tensors (vram.py lists them by name). Fit; 1.0 until
# measured. RWKV-PEFT's v7 int8 vs nf4 peaks differ by the weight bytes alone (0.5-1.0 GB at 1.5B and
# 2.9B), which says activations do not scale with the weight format: consistent with 1.0.
ACTIVATION_SCALE = 1.0
# Gradients of one layer's widest tensors alive during its backward, in elements per token:
# BACKWARD_C * n_embd + BACKWARD_F * dim_ffn. First principles (grad of the residual stream, of the
# FFN hidden and of the WKV inputs).
BACKWARD_C = 6
BACKWARD_F = 2
# The v7 CUDA kernel checkpoints its fp32 state every 16 steps ([B, H, T/16, N, N]) and keeps an fp32
# S·a buffer [B, T, H, N] (rwkv-architecture.md §3.1).
WKV7_CHUNK = 16

# --- logits and loss ---------------------------------------------------------------------------
# Bytes per logit element at the loss peak: bf16 head output (2) + fp32 upcast (4) + fp32
# log-softmax (4) during the forward; the fp32 gradient pair (4 + 4) + saved log-probs in backward,
# of which ~10 are alive at once. First principles; RWKV-PEFT's 0.1B peaks (2.4-2.7 GB, where the
# logits are the largest dynamic tensor) bound it from above.
LOGIT_BYTES = 10
# Token rows per chunk when chunked cross-entropy is used (never materialises [B*T, V]).
CE_CHUNK_TOKENS = 1024

# --- fitting a card --------------------------------------------------------------------------------
# Fraction of a card's memory we plan to use: the rest is for the desktop, other processes and the
# estimate's error. First principles (the 10% accuracy goal, halved).
FIT_FRACTION = 0.95

# --- speed ------------------------------------------------------------------------------------------
# Achieved fraction of a GPU's dense bf16 tensor peak for RWKV fine-tuning at micro_bsz x ctx_len of a
# few thousand tokens. First principles (typical 30-45% MFU for mid-sized models with custom WKV
# kernels); no published RWKV-PEFT speed numbers exist (rwkv-peft.md §8.3). Fit.
MFU = 0.35
# Throughput multipliers: bitsandbytes dequantises every weight on every forward and backward.
QUANT_SPEED = {"none": 1.0, "int8": 0.7, "nf4": 0.6, "fp4": 0.6}  # fp4: not measured, nf4's dequant path
# DeepSpeed CPU offload steps the optimizer on the CPU and moves weights/grads over PCIe.
OFFLOAD_SPEED = 0.5
# Tensor-core rate relative to bf16: tf32 runs at half rate, plain fp32 on the CUDA cores (datasheets).
PRECISION_SPEED = {"bf16": 1.0, "fp16": 1.0, "tf32": 0.5, "fp32": 0.125}
