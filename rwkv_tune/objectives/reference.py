"""The reference policy of DPO and GRPO: the base model, i.e. the policy with its adapter switched off.

No second model is kept. Inside `with reference.active():` (always under no_grad):
- every adapted Linear (LoRA, MiSS, quantized or not) computes with its frozen base weight only;
  PiSSA's frozen weight is the residual W − B₀A₀, so its base is the residual plus its saved init B₀A₀;
- the trainable dense tensors (train_parts such as ln/time, a state-tuning `time_state`, every
  weight under full fine-tuning) are swapped for the values they had when the reference was taken:
  the zero (or the file's own) initial state for state tuning, a frozen copy only for full.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from rwkv_tune.peft.base import AdaptedLinear


def _base_forward(layer: AdaptedLinear, x: torch.Tensor) -> torch.Tensor:
    """The Linear as the base model had it (no adapter delta)."""
    y = F.linear(x, layer.frozen_weight(x.dtype))
    a0, b0 = getattr(layer, "init_lora_A", None), getattr(layer, "init_lora_B", None)
    if a0 is not None and b0 is not None:  # PiSSA: base = residual + B₀A₀
        y = y + F.linear(F.linear(x, a0.to(x.dtype)), b0.to(x.dtype))
    return y


class ReferencePolicy:
    """Switches a PEFT-applied model to its base for the duration of a `with active():` block."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.adapted = [m for m in model.modules() if isinstance(m, AdaptedLinear)]
        adapter_params = {id(p) for m in self.adapted for s in m.suffixes
                          if isinstance(p := getattr(m, s, None), nn.Parameter)}
        # trainable tensors that are not adapter factors: their starting values are the reference's
        self.saved = [(p, p.detach().clone()) for p in model.parameters()
                      if p.requires_grad and id(p) not in adapter_params]

    @property
    def copies_numel(self) -> int:
        """How many values the reference keeps (0 for pure adapters; the whole model under full)."""
        return sum(v.numel() for _, v in self.saved)

    @contextmanager
    def active(self) -> Iterator[nn.Module]:
        """The model computing as its base; restored on exit (also on error). Gradients are off inside."""
        current = []
        try:
            with torch.no_grad():
                for layer in self.adapted:
                    layer.forward = types.MethodType(_base_forward, layer)
                for p, ref in self.saved:
                    current.append((p, p.data))
                    p.data = ref
                yield self.model
        finally:
            for layer in self.adapted:
                layer.__dict__.pop("forward", None)
            for p, data in current:
                p.data = data


def reference_logprobs(reference: ReferencePolicy, tokens: torch.Tensor, response: torch.Tensor,
                       per_token: bool = False) -> torch.Tensor:
    """Reference log-probs of the response tokens: per row sums [B] (or per token [B, T-1])."""
    from rwkv_tune.objectives.logprobs import sequence_logprobs, token_logprobs

    with reference.active() as model:
        if per_token:
            return token_logprobs(model, tokens, response)
        return sequence_logprobs(model, tokens, response)[0]
