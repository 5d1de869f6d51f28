"""Helpers for code that reads or writes parameters while ranks hold only shards of them (ZeRO-3).

`gathered(params, engine)` makes the listed parameters whole on every rank for the duration of a
block (every rank must enter it: it is a collective); outside ZeRO-3 it does nothing. Forward passes
under ZeRO-3 gather by themselves, but only if every rank runs them: eval and sampling run on all
ranks and only rank 0 reports.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch


def zero_stage(engine: Any) -> int:
    """The ZeRO stage of a DeepSpeed engine (0: no engine, or plain data parallel)."""
    return int(getattr(engine, "zero_stage", 0) or 0)


def is_partitioned(param: torch.nn.Parameter) -> bool:
    """Whether DeepSpeed ZeRO-3 manages this parameter (its data may be an empty shard)."""
    return hasattr(param, "ds_id")


@contextlib.contextmanager
def gathered(params: list[torch.nn.Parameter], engine: Any, *, modify: bool = False) -> Iterator[None]:
    """Whole parameters inside the block on every rank; with `modify`, rank 0's changes are kept everywhere."""
    partitioned = [p for p in params if is_partitioned(p)]
    if zero_stage(engine) != 3 or not partitioned:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=0 if modify else None):
        yield


def adapter_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters an adapter file reads: trainable ones, adapted layers' saved tensors, the state method's."""
    from rwkv_tune.peft.base import AdaptedLinear

    saved = {id(p) for m in model.modules() if isinstance(m, AdaptedLinear)
             for s, p in m.named_parameters(recurse=False) if s in m.suffixes}
    return [p for name, p in model.named_parameters()
            if p.requires_grad or id(p) in saved or name.endswith(".att.time_state")]


def barrier(engine: Any) -> None:
    if engine is not None and getattr(engine, "world_size", 1) > 1:
        import torch.distributed as dist

        dist.barrier()


def devices_label(device: torch.device, world_size: int, strategy: str) -> str:
    """What the dashboard's header shows for several ranks, e.g. 'cpu ×2 ranks · deepspeed_stage_3'."""
    if world_size == 1:
        return ""  # the dashboard derives it from the preset
    return f"{device.type} ×{world_size} ranks · {strategy}"


def pad_to_length(x: torch.Tensor, y: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch right-padded to `length` (targets ignored there): under DeepSpeed every rank must run the same
    number of infctx chunks (each backward call is a collective), whatever its own batch's padded length."""
    pad = length - x.shape[1]
    if pad <= 0:
        return x, y
    return (torch.nn.functional.pad(x, (0, pad), value=0),
            torch.nn.functional.pad(y, (0, pad), value=-100))
