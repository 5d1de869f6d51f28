"""The trainer's side of DPO, ORPO and GRPO: build the objective, run its micro-batches, evaluate it.

The loop keeps its optimizer, schedule, NaN guard, clipping, checkpoints and events; for an objective
other than sft it takes its batches from `ObjectiveBatches` (whose state_dict is the objective's:
cursor, GRPO's sampler RNG and group count) and its loss from `objective_micro_steps`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rwkv_tune.objectives.base import Objective
from rwkv_tune.objectives.rollout_log import ROLLOUTS_FILE


class ObjectiveBatches:
    """The objective's endless batches, resumable like the SFT batch iterator (state_dict/load_state_dict)."""

    def __init__(self, objective: Objective, model: torch.nn.Module, rollouts: Path | None,
                 notes: list[str] | None = None):
        self.objective, self.rollouts, self.notes = objective, rollouts, notes or []
        self._iterator = objective.batches(model)

    def warnings(self) -> list[str]:
        """What the trainer reports as `warning` events at the start (records cut to ctx_len)."""
        return self.notes

    def __iter__(self) -> ObjectiveBatches:
        return self

    def __next__(self) -> Any:
        return next(self._iterator)

    def state_dict(self) -> dict[str, Any]:
        return self.objective.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.objective.load_state_dict(state)
        groups = state.get("groups")
        if groups is not None and self.rollouts is not None and self.rollouts.exists():
            forget_rollouts_after(self.rollouts, int(groups))


def forget_rollouts_after(path: Path, groups: int) -> None:
    """Drop rollouts.jsonl lines of groups past a resumed checkpoint (they are sampled again, identically)."""
    import json

    from rwkv_tune.checkpoint import atomic_path

    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if int(json.loads(line).get("group", 0)) <= groups:
                kept.append(line + "\n")
        except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
            continue
    with atomic_path(path) as tmp:
        tmp.write_text("".join(kept), encoding="utf-8")


def build_for_trainer(trainer: Any) -> tuple[Objective | None, ObjectiveBatches | None]:
    """The preset's objective on the trainer's model (call after apply, before restore) and its batches.

    (None, None) for sft, after refusing a pairs/prompts .jsonl file that data.type auto would read as text.
    """
    from rwkv_tune.objectives.factory import build_objective

    p = trainer.preset
    if p.objective.type == "sft":
        refuse_objective_data(p.data.path, p.data.type)
        return None, None
    run_dir = trainer.run.root if trainer.rank == 0 else None
    from rwkv_tune.objectives.pairs import read_objective_data

    _, items = read_objective_data(p.data.path, p.data.type, vocab_size=trainer.spec.vocab_size)
    items, cut = fit_to_context(items, p.data.ctx_len)
    notes = [f"{cut} of {len(items)} records of {p.data.path} were longer than data.ctx_len = {p.data.ctx_len} "
             "tokens and were cut (the prompt from its start, then the responses)"] if cut else []
    objective = build_objective(p.objective_config, trainer.model, items, data_type=p.data.type,
                                batch_size=p.train.micro_bsz, seed=p.train.seed + trainer.rank, device=trainer.device,
                                run_dir=run_dir, search_path=Path(p.source).resolve().parent if p.source else None)
    rollouts = trainer.run.root / ROLLOUTS_FILE if run_dir is not None else None
    return objective, ObjectiveBatches(objective, trainer.model, rollouts, notes)


def fit_to_context(items: list[Any], ctx_len: int) -> tuple[list[Any], int]:
    """Pairs and prompts cut to ctx_len tokens: a prompt keeps its end (at least one token), responses their start."""
    from dataclasses import replace

    from rwkv_tune.objectives.pairs import Pair

    out, cut = [], 0
    for item in items:
        if isinstance(item, Pair):
            longest = max(len(item.chosen), len(item.rejected))
            if len(item.prompt) + longest <= ctx_len:
                out.append(item)
                continue
            prompt = item.prompt[-max(1, ctx_len - longest):]
            room = max(1, ctx_len - len(prompt))
            out.append(Pair(prompt, item.chosen[:room], item.rejected[:room]))
        else:
            if len(item.ids) <= ctx_len:
                out.append(item)
                continue
            out.append(replace(item, ids=item.ids[-ctx_len:]))
        cut += 1
    return out, cut


def refuse_objective_data(path: str, data_type: str) -> None:
    """SFT on a {prompt, chosen, rejected} file would train on its text: say which objective reads it."""
    if data_type != "auto" or not str(path).endswith(".jsonl") or not Path(path).is_file():
        return
    import json

    from rwkv_tune.errors import ConfigError

    with open(path, encoding="utf-8") as f:
        first = next((line for line in f if line.strip()), "")
    try:
        record = json.loads(first)
    except json.JSONDecodeError:
        return
    if isinstance(record, dict) and "chosen" in record and "rejected" in record:
        raise ConfigError(f"{path} holds preference pairs (prompt, chosen, rejected), but objective.type is sft",
                          "Set objective.type: dpo (or orpo) to train on them, or give SFT data.")


def objective_micro_steps(trainer: Any, autocast: Callable[[], Any]) -> tuple[float, int, dict[str, float]]:
    """`accumulate` micro-batches of the objective: forward under `autocast()`, backward of loss/accumulate.

    Returns (mean loss over the micro-batches and ranks, tokens seen, mean event fields).
    """
    p = trainer.preset
    accumulate = p.train.accumulate_grad_batches
    loss_sum, tokens = 0.0, 0
    fields: dict[str, float] = {}
    for _ in range(accumulate):
        batch = next(trainer.batches)
        with autocast():
            loss, extra = trainer.objective.loss(trainer.model, batch)
        scaled = loss.float() / accumulate
        if trainer.engine is not None:
            trainer.engine.backward(scaled)
        else:
            scaled.backward()
        loss_sum += float(loss.detach())
        tokens += int(batch["tokens"].numel())
        for key, value in extra.items():
            fields[key] = fields.get(key, 0.0) + float(value) / accumulate
    loss = loss_sum / accumulate
    if trainer.world_size > 1 and trainer.engine is not None:
        loss = trainer.engine.sum(loss) / trainer.world_size
    return loss, tokens * trainer.world_size, fields


def evaluate_objective(trainer: Any) -> dict[str, float] | None:
    """dpo/orpo: loss, pref_accuracy and the other fields over the held-out pairs of data.eval_path."""
    evaluate = getattr(trainer.objective, "evaluate", None)
    if evaluate is None:
        return None
    held_out = getattr(trainer, "_held_out_pairs", None)
    if held_out is None:
        from rwkv_tune.objectives.pairs import read_objective_data

        _, held_out = read_objective_data(trainer.preset.data.eval_path, "pairs",
                                          vocab_size=trainer.spec.vocab_size)
        trainer._held_out_pairs = held_out
    return evaluate(trainer.model, held_out, batch_size=trainer.preset.train.micro_bsz)
