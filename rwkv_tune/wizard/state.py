"""What the wizard asks and remembers: the question and state types, and the order of the questions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rwkv_tune.estimate.gpus import GPU
from rwkv_tune.preset.schema import TrainSection
from rwkv_tune.spec import ModelSpec
from rwkv_tune.wizard.detect import DataInfo

ADVANCED = ("precision", "devices", "strategy", "lr_init", "lr_final", "epoch_steps", "epoch_count")
FLOW = ("model", "objective", "data", "gpu", "method", "rank", "quant", "ctx_len", "micro_bsz", "grad_cp", "more", *ADVANCED, "out")
# Keys that only flags set (no question): they keep these values unless given.
FLAG_ONLY = {key: getattr(TrainSection(), key) for key in ("accumulate_grad_batches", "train_type", "chunk_ctx")}
NO_GPU = "none"
CPU = "cpu"  # the gpu answer for training on this machine's CPU


@dataclass(frozen=True)
class Choice:
    """One option of a select question."""

    value: Any
    title: str
    description: str = ""


@dataclass(frozen=True)
class Question:
    """What to ask next: `kind` is model | path | select | confirm | int | float."""

    key: str
    kind: str
    message: str
    default: Any
    choices: tuple[Choice, ...] = ()
    help: str = ""


@dataclass(frozen=True)
class State:
    """The wizard's answers so far plus what it found out (model spec, data kind, GPUs it sees)."""

    answers: Mapping[str, Any] = field(default_factory=dict)
    spec: ModelSpec | None = None
    data: DataInfo | None = None
    gpus: tuple[GPU, ...] = ()
    found_models: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
