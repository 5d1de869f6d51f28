"""State tuning: a trainable initial WKV state `blocks.N.att.time_state` [H, N, N] per layer, all else frozen.

Layout is RWKV-PEFT's: [H, value, key] for v7, and the same stored layout for v6/v5 (the model
transposes it for the v6/v5 op). It starts at zero (or at the base's own time_state if the file has
one) and is the initial state of every sequence; gradients from the batch are summed into it.

Merging follows RWKV-PEFT's merge_state: the states are written into the model file as
`blocks.N.att.time_state` (right before each layer's receptance, where RWKV-LM registers it);
`rwkv_tune.load_model` then starts every sequence from them. Runtimes that ignore the key (the
`rwkv` pip package does) need the state file itself: the adapter holds exactly those keys.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from rwkv_tune.peft.base import Method
from rwkv_tune.peft.config import PeftConfig


class StateTuning(Method):
    name = "state"

    def prepare(self, model: nn.Module, cfg: PeftConfig, layers: tuple[int, ...]) -> None:
        spec = model.spec
        device = model.emb.weight.device
        for i, block in enumerate(model.blocks):
            att = block.att
            if att.time_state is None:
                # fp32: the updates are tiny next to bf16's resolution, and the tensor is small (L·H·N²)
                att.time_state = nn.Parameter(torch.zeros(spec.n_head, spec.head_size, spec.head_size,
                                                          dtype=torch.float32, device=device))
            att.time_state.requires_grad_(i in layers)
