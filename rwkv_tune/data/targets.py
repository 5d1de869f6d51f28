"""Whether a loss mask leaves anything to learn: checked on a sample of documents before training starts.

A `qa`/`sft` mask on data without role markers masks every token, so every batch would be skipped and
the run would never take a step. `check_targets(batches)` refuses that up front, saying what the data
looks like and which mask fits it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from rwkv_tune.data.masks import LossMarkers
from rwkv_tune.data.sampling import IGNORE, doc_sample
from rwkv_tune.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from rwkv_tune.data.sampling import Batches

SAMPLE_DOCUMENTS = 200


def _quoted(markers: tuple[str, ...]) -> str:
    return "/".join(f"'{m}'" for m in markers)


def check_targets(batches: Batches, sample: int = SAMPLE_DOCUMENTS) -> None:
    """Raise DataError when the loss mask leaves no target in the first `sample` usable documents."""
    if getattr(batches, "loss_mask", "pad") not in ("qa", "sft") or batches.mode == "get":
        return
    from rwkv_tune.data.tokenizer import get_tokenizer

    tokenizer = batches.tokenizer or get_tokenizer()
    markers = batches.markers or LossMarkers()
    picked = [int(i) for i in batches.usable_documents[:sample]]
    for i in picked:
        _, y = doc_sample(batches.docs[i], batches.ctx_len, batches.loss_mask, tokenizer, markers)
        if (y != IGNORE).any():
            return
    what, fix = describe(batches, picked, tokenizer, markers)
    raise DataError(f"loss_mask {batches.loss_mask} leaves nothing to learn in {batches.docs.name}: {what} "
                    f"in the first {len(picked)} documents", fix)


def describe(batches: Batches, picked: list[int], tokenizer, markers: LossMarkers) -> tuple[str, str]:
    """(what the sampled documents look like, the fix) for the refusal message."""
    texts = [tokenizer.decode_bytes(np.asarray(batches.docs[i], dtype=np.int64)) for i in picked]
    learn = [m.encode("utf-8") for m in markers.learn]
    stop = [m.encode("utf-8") for m in markers.stop]
    has_learn = any(m in t for t in texts for m in learn)
    has_stop = any(m in t for t in texts for m in stop)
    roles = _quoted(markers.stop[:1] + markers.learn)
    if not has_learn and not has_stop:
        return (f"no {roles} markers", "This looks like plain text: use loss_mask: pad (learn every token), "
                "or prepare chat records with `rwkv-tune data prepare`.")
    if not has_learn:
        return (f"{_quoted(markers.stop)} turns but no {_quoted(markers.learn)} turn",
                "Add the assistant replies to the data, or use loss_mask: pad.")
    return (f"{_quoted(markers.learn)} only mid-line or after ctx_len = {batches.ctx_len} tokens",
            "Put each role marker at the start of a line, raise data.ctx_len, or use loss_mask: pad.")
