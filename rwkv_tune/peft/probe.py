"""Probe logits of a state dict, optionally with an adapter, built and run one block at a time in fp32.

Merge verification compares the merged model's logits with base + adapter. Building two whole fp32
models would need about 4× a bf16 file in memory; instead each block is built on its own from the
(memory-mapped) state dict and the hidden state is carried to the next block. Small tensors are
upcast to fp32 for the block; each Linear makes its fp32 weight when it runs and drops it after, so
the extra memory is about one Linear's weight. Emb rows are gathered, the head applied in row chunks.

With an adapter, three variants run side by side, block by block:
- `adapter`: the base with the adapter applied by the method's own training-time `wrap` (and the
  `quant` base it trained on): what training computed;
- `folded`: the merge math (`peft.adapter.Folding`, what `merge_iter` writes) in fp32;
- `rounded`: `folded` stored in the output dtype, exactly as `merge_iter` converts it.
`folded` vs `adapter` checks the merge math; `rounded` vs `folded` is the logit change that storing
the merged weights in a low-precision dtype causes by itself, which a verification must allow.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from rwkv_tune.peft.adapter import Folding
from rwkv_tune.peft.adapter_file import Adapter

HEAD_ROWS = 4096  # head rows upcast at a time


class _LazyLinear(nn.Module):
    """A Linear whose fp32 weight is made when it runs and dropped right after."""

    def __init__(self, make: Callable[[], torch.Tensor]):
        super().__init__()
        self.make = make

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.make())


def _adapted(linear: nn.Linear, name: str, folding: Folding) -> nn.Module:
    """One Linear as training ran it: wrapped by the method (and quantized), weights upcast on the fly."""
    from rwkv_tune.peft.base import AdaptedLinear
    from rwkv_tune.quant import quantize_layer

    stored = linear.weight
    parts = folding.linear.get(name)
    if parts is None:
        new = AdaptedLinear(linear)
    else:
        linear.weight = nn.Parameter(stored.float(), requires_grad=False)  # e.g. PiSSA's residual is made in fp32
        with torch.random.fork_rng(devices=[]):  # wrap() initialises tensors we overwrite; keep the caller's RNG
            new = folding.method.wrap(linear, folding.config, {s: v.float() for s, v in parts.items()})
        if new.weight is not None and new.weight.data_ptr() == linear.weight.data_ptr():
            new.weight = nn.Parameter(stored, requires_grad=False)  # unchanged: keep the stored (mapped) tensor
        for suffix, value in parts.items():
            target = getattr(new, suffix, None)
            if isinstance(target, torch.Tensor):
                target.data = value.detach().to(dtype=target.dtype)
    if name in folding.quantized:
        quantize_layer(new, folding.quant)
    return new


@torch.no_grad()
def probe_logits(state_dict: Mapping[str, torch.Tensor], idx: torch.Tensor, *, adapter: Adapter | None = None,
                 quant: str | None = None, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """fp32 logits [B, T, V] for token ids idx: {'model'} alone, or {'adapter', 'folded', 'rounded'} with one.

    quant: the base the adapter trained on (int8/nf4/fp4); dtype: the merge's output dtype (None:
    each tensor keeps the base's), used for 'rounded'.
    """
    from rwkv_tune.model.common import LN_EPS, Block
    from rwkv_tune.spec import detect

    spec = detect(state_dict)
    folding = Folding(state_dict, adapter, quant) if adapter is not None else None
    dense = folding.dense if folding is not None else {}
    names = ("adapter", "folded", "rounded") if folding is not None else ("model",)
    if folding is not None and (dtype or getattr(torch, spec.dtype)) == torch.float32:
        names = ("adapter", "folded")  # nothing to round: 'rounded' is 'folded'
    if any(k.endswith(".att.time_state") for k in dense) and not spec.time_state:
        spec = replace(spec, time_state=True)

    def src(key: str) -> torch.Tensor:
        if key in dense or key in state_dict:
            return (dense[key] if key in dense else state_dict[key]).detach()
        return torch.zeros(spec.n_head, spec.head_size, spec.head_size)  # a layer a state adapter skips

    def target(key: str, value: torch.Tensor) -> torch.dtype:
        """The dtype merge_iter stores `key` in (an inserted time_state follows its layer's receptance)."""
        like = state_dict.get(key)
        if like is None:
            like = state_dict[key.replace("att.time_state", "att.receptance.weight")]
        return dtype if dtype is not None and value.is_floating_point() else like.dtype

    stash: dict[str, torch.Tensor] = {}  # this block's merged tensors, stored as 'rounded' will see them

    def value(key: str, name: str, rows: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """Tensor `key` (or some of its rows) in fp32 as the variant `name` sees it."""
        if name == "rounded" and key in stash:
            return stash.pop(key).float()
        if name in ("folded", "rounded") and key in state_dict:
            merged = folding.fold(key, state_dict[key])
            t = src(key)[rows] if merged is None else merged[rows]
            whole = isinstance(rows, slice) and rows == slice(None)
            if merged is not None and name == "folded" and "rounded" in names and whole:
                stash[key] = merged.to(target(key, merged))  # the merge math runs once for both variants
        else:
            t = src(key)[rows]
        keep = name != "rounded" or (key not in dense and key in state_dict and t.dtype == target(key, t))
        return (t if keep else t.to(target(key, t))).float()  # 'keep': the stored value is already exact

    version = importlib.import_module("rwkv_tune.model.v7a" if spec.variant else f"rwkv_tune.model.v{spec.version}")
    block_type = getattr(version, "DeepEmbedBlock", Block)
    xs = {n: value("emb.weight", n, idx) for n in names}
    token_embs = {}  # 7a/7b: every block also reads LN0(emb[idx]); their x starts as it (block 0 skips ln0)
    if spec.variant:
        for n in names:
            xs[n] = token_embs[n] = F.layer_norm(xs[n], (spec.n_embd,), value("blocks.0.ln0.weight", n),
                                                 value("blocks.0.ln0.bias", n), eps=LN_EPS)
    firsts: dict[str, torch.Tensor | None] = dict.fromkeys(names)
    for i in range(spec.n_layer):
        prefix = f"blocks.{i}."
        for name in names:
            with torch.device("meta"):
                block = block_type(spec, i, version.TimeMix, version.ChannelMix)
            linears = [m for m, mod in block.named_modules() if isinstance(mod, nn.Linear)]
            weights = {f"{m}.weight" for m in linears}
            # Linear weights: the stored (mapped) tensors for `adapter`, made lazily for the others
            sub = {rel: src(prefix + rel) if rel in weights else value(prefix + rel, name)
                   for rel in block.state_dict() if name == "adapter" or rel not in weights}
            block.load_state_dict(sub, strict=False, assign=True)
            for rel in linears:
                parent, _, child = rel.rpartition(".")
                key = f"{prefix}{rel}.weight"
                if name == "adapter":
                    new = _adapted(block.get_submodule(rel), prefix + rel, folding)
                else:
                    new = _LazyLinear(lambda key=key, name=name: value(key, name))
                setattr(block.get_submodule(parent), child, new)
            block.eval()
            extra = (idx, token_embs[name]) if spec.variant else ()
            xs[name], firsts[name] = block(xs[name], firsts[name], None, None, None, *extra)[:2]
            del block, sub
    logits = {}
    for name in names:
        h = F.layer_norm(xs[name], (spec.n_embd,), value("ln_out.weight", name), value("ln_out.bias", name),
                         eps=LN_EPS)
        rows = range(0, src("head.weight").shape[0], HEAD_ROWS)
        logits[name] = torch.cat([h @ value("head.weight", name, slice(r, r + HEAD_ROWS)).T for r in rows], dim=-1)
    if folding is not None and "rounded" not in names:
        logits["rounded"] = logits["folded"]
    return logits
