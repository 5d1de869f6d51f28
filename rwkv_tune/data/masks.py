"""Loss masks: which tokens of a document the model learns to predict.

- `pad`: every real token; padding is ignored.
- `none`: no mask at all; even padding targets (end-of-document, id 0) are learned.
- `qa`: only assistant turns: from the end of each assistant marker up to the next other-role
  marker, so the `\\n\\n` that ends a reply and the final end-of-document token are learned.
- `sft`: only the last assistant turn (the response of a prompt/response pair) plus the end token.

Markers are found in the document's bytes (at the start of a line), and a token is learned when
its first byte lies in a learned region. Working on bytes rather than on token sequences means
a marker is found however the tokenizer happened to split the text around it. A document with
no assistant marker has nothing to learn under `qa`/`sft` (all False); callers count and report it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from rwkv_tune.errors import ConfigError
from rwkv_tune.preset import schema

if TYPE_CHECKING:  # pragma: no cover
    from rwkv_tune.data.tokenizer import WorldTokenizer

LOSS_MASKS = schema.LOSS_MASKS


@dataclass(frozen=True)
class LossMarkers:
    """Role markers: loss starts after a `learn` marker and stops at a `stop` marker."""

    learn: tuple[str, ...] = ("Assistant:",)
    stop: tuple[str, ...] = ("User:", "System:")

    def to_dict(self) -> dict[str, list[str]]:
        """JSON form, recorded in PREFIX.meta.json."""
        return {"learn": list(self.learn), "stop": list(self.stop)}


def check_loss_mask(kind: str) -> str:
    """Validate a loss-mask name early, with the allowed names in the message."""
    if kind not in LOSS_MASKS:
        raise ConfigError(f"loss_mask {kind!r} is not known", f"Use one of: {', '.join(LOSS_MASKS)}.")
    return kind


@lru_cache(maxsize=64)
def _pattern(markers: tuple[str, ...]) -> re.Pattern[bytes]:
    alternatives = b"|".join(re.escape(m.encode("utf-8")) for m in sorted(markers, key=len, reverse=True))
    return re.compile(b"^(?:" + alternatives + b")", re.M)


def loss_regions(text: bytes, kind: str, markers: LossMarkers) -> list[tuple[int, int]]:
    """Byte ranges [start, end) of `text` that carry loss under a qa/sft mask (end may be past the text)."""
    learn = {m.encode("utf-8") for m in markers.learn}
    found = [(m.start(), m.end(), m.group(0) in learn)
             for m in _pattern(tuple(markers.learn) + tuple(markers.stop)).finditer(text)]
    open_end = len(text) + 1
    regions = []
    for i, (_, end, is_learn) in enumerate(found):
        if is_learn:
            stop = found[i + 1][0] if i + 1 < len(found) else open_end
            regions.append((end, stop))
    if kind == "sft":
        return regions[-1:]
    return regions


def loss_flags(tokens: np.ndarray, kind: str, tokenizer: WorldTokenizer, markers: LossMarkers | None = None) -> np.ndarray:
    """Per token, whether it carries loss as a prediction target under mask `kind`."""
    check_loss_mask(kind)
    tokens = np.asarray(tokens, dtype=np.int64)
    if kind in ("pad", "none"):
        return np.ones(len(tokens), dtype=bool)
    markers = markers or LossMarkers()
    lengths = tokenizer.token_lengths[tokens]
    starts = np.cumsum(lengths) - lengths
    regions = loss_regions(tokenizer.decode_bytes(tokens), kind, markers)
    if not regions:
        return np.zeros(len(tokens), dtype=bool)
    lo = np.array([r[0] for r in regions])
    hi = np.array([r[1] for r in regions])
    k = np.searchsorted(lo, starts, side="right") - 1
    return (k >= 0) & (starts < hi[np.maximum(k, 0)])
