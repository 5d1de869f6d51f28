"""Quantized frozen base weights (bitsandbytes int8 / nf4 / fp4) under an adapter; CPU and GPU.

Only the targeted att/ffn Linear weights are quantized (emb, head, norms and the small mixing
matrices never are). Each is stored as buffers (no gradient) and dequantized for every forward, as
RWKV-PEFT does, so the saving is in storage; backward flows through x and the adapter only. Q(W)
is always computed from bf16(W), so it is the same whether the model was loaded in fp32 or bf16.

Merging is quant-aware by default: the adapter records the quant it trained with, and `rwkv-tune
merge` folds it into dequant(quant(W)), exactly the weights the run trained against, computed with
the same function as here (`quantize_dequantize`); `--quant none` (`merge(..., quant="none")`) folds
it into the original full-precision base instead. The pure `peft.merge(base, adapter, quant=...)`
quantizes only when asked.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn as nn

from rwkv_tune.errors import ConfigError
from rwkv_tune.preset.schema import QUANT_KINDS

KINDS = QUANT_KINDS
BLOCKSIZE = 64  # 4-bit block size (bitsandbytes' and RWKV-PEFT's default)


def _functional() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import bitsandbytes.functional as bnb_f
    return bnb_f


def require_bitsandbytes(kind: str) -> None:
    """Raise ConfigError unless `kind` is a known quantization and bitsandbytes imports."""
    if kind not in KINDS:
        raise ConfigError(f"quant = {kind!r} is not one of none, {', '.join(KINDS)}",
                          f"Use quant: {' or '.join(KINDS)}.")
    try:
        _functional()
    except Exception as exc:  # ImportError or a broken native library: both mean "cannot quantize here"
        raise ConfigError(f"quant = {kind} needs bitsandbytes, which does not load ({str(exc)[:100]})",
                          "pip install bitsandbytes, or set quant: none.") from None


class QuantizedWeight(nn.Module):
    """A frozen [out, in] weight stored quantized in buffers; `dequantize()` rebuilds it."""

    def __init__(self, weight: torch.Tensor, kind: str):
        super().__init__()
        require_bitsandbytes(kind)
        bnb_f = _functional()
        w = weight.detach().to(torch.bfloat16).contiguous()
        self.kind, self.shape, self.dtype = kind, tuple(w.shape), weight.dtype
        if kind == "int8":
            data, scale, _ = bnb_f.int8_vectorwise_quant(w)  # int8 rows + one fp32 scale per row
            self.register_buffer("data", data)
            self.register_buffer("scale", scale)
        else:
            packed, state = bnb_f.quantize_4bit(w, blocksize=BLOCKSIZE, quant_type=kind)
            self.register_buffer("data", packed)
            self.register_buffer("absmax", state.absmax)
            self.register_buffer("code", state.code)

    @property
    def numel(self) -> int:
        """Elements of the original weight."""
        return self.shape[0] * self.shape[1]

    def nbytes(self) -> int:
        """Bytes held in memory (data + scales)."""
        return sum(b.numel() * b.element_size() for b in self.buffers())

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The [out, in] weight rebuilt from its quantized form (no gradient)."""
        bnb_f = _functional()
        if self.kind == "int8":
            w = bnb_f.int8_vectorwise_dequant(self.data, self.scale)
        else:
            state = bnb_f.QuantState(absmax=self.absmax, shape=torch.Size(self.shape), code=self.code,
                                     blocksize=BLOCKSIZE, quant_type=self.kind, dtype=torch.bfloat16)
            w = bnb_f.dequantize_4bit(self.data, state)
        return w.to(dtype or self.dtype)

    def extra_repr(self) -> str:
        return f"{self.kind}, shape={list(self.shape)}"


def quantize_dequantize(w: torch.Tensor, kind: str) -> torch.Tensor:
    """dequant(quant(W)) in fp32: what a quantized run's frozen weight is (used by quant-aware merge)."""
    return QuantizedWeight(w, kind).dequantize(torch.float32)


def quantize_layer(layer: nn.Module, kind: str) -> None:
    """Replace an AdaptedLinear's frozen weight by its quantized form (the fp weight is dropped)."""
    layer.qweight = QuantizedWeight(layer.weight, kind)
    layer.weight = None


def storage_report(model: nn.Module) -> dict[str, Any]:
    """Bytes of the quantized layers versus the same weights in bf16."""
    quantized = [m.qweight for m in model.modules() if getattr(m, "qweight", None) is not None]
    qbytes = sum(q.nbytes() for q in quantized)
    bf16 = sum(q.numel * 2 for q in quantized)
    return {"layers": len(quantized), "quantized_bytes": qbytes, "bf16_bytes": bf16,
            "ratio": qbytes / bf16 if bf16 else None}
