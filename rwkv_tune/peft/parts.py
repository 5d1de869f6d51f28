"""Which dense parameters train on top of an adapter: `train_parts` (emb, head, time, ln).

train_parts follow RWKV-PEFT's substring rules on official names: emb → emb.weight, head →
head.weight, time → every parameter with a name part starting with "time" (v5/v6 time_mix/maa/decay/
faaaa; v7 has none but time_state), ln → ln0/ln1/ln2/ln_x/ln_out (and 7b's lnq/lnk/lnv), deepembed →
the RWKV-7a/7b per-token tables (ffn.s_emb, qkv.k_emb, qkv.v_emb). Default on an adapter: time + ln
(RWKV-PEFT's default); `train_parts: []` turns it off. Within `layers`, only those blocks' parts
train; emb, head and ln_out are global. They are saved whole in the adapter and replace the base's
tensors at merge.
"""

from __future__ import annotations

from collections.abc import Iterable

from rwkv_tune.spec import DEEPEMBED_TABLES


def part_matches(name: str, parts: Iterable[str]) -> bool:
    """True if an official parameter name belongs to one of the train_parts."""
    pieces = name.split(".")
    for part in parts:
        if part == "emb" and name == "emb.weight" or part == "head" and name == "head.weight":
            return True
        if part == "time" and any(p.startswith("time") for p in pieces):
            return True
        if part == "ln" and any(p.startswith("ln") for p in pieces):
            return True
        if part == "deepembed" and name.endswith(DEEPEMBED_TABLES):
            return True
    return False


def is_part(name: str, parts: Iterable[str], layers: tuple[int, ...]) -> bool:
    """A train_part inside the selected layers (emb, head, ln_out are global and always eligible)."""
    if not part_matches(name, parts):
        return False
    return not name.startswith("blocks.") or int(name.split(".")[1]) in layers
