"""Prompts for `train.sample_every` when `train.sample_prompts` is empty: drawn from the training data.

Chat data gives its first turns up to the first assistant marker (the model answers the user), anything
else the opening words of its first documents, so `sample_every` alone shows what the model writes.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from rwkv_tune.data.masks import LossMarkers

if TYPE_CHECKING:  # pragma: no cover
    from rwkv_tune.data.sampling import Batches

HEAD_TOKENS = 256  # of each document, to find the first assistant marker
OPENING_CHARS = 60  # of a plain document, cut at a word


def prompt_from_text(text: str, markers: LossMarkers) -> str:
    """The prompt one document gives: up to its first assistant marker, else its opening words."""
    pattern = "|".join(re.escape(m) for m in markers.learn)
    found = re.search(f"^(?:{pattern})", text, re.M) if pattern else None
    if found is not None and found.start() > 0:
        return text[:found.end()]
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    if len(line) <= OPENING_CHARS:
        return line
    cut = line[:OPENING_CHARS]
    return cut[:cut.rfind(" ")] if " " in cut else cut


def default_prompts(batches: Batches, count: int = 2) -> list[str]:
    """Up to `count` distinct prompts from the first documents of the data (empty for window-only data)."""
    from rwkv_tune.data.tokenizer import get_tokenizer

    docs = getattr(batches, "docs", None)
    if docs is None:
        return []
    tokenizer = batches.tokenizer or get_tokenizer()
    markers = batches.markers or LossMarkers()
    prompts: list[str] = []
    for i in range(min(len(docs), 20)):
        text = tokenizer.decode(docs[i][:HEAD_TOKENS].tolist()).replace("\ufffd", "")
        prompt = prompt_from_text(text, markers)
        if prompt.strip() and prompt not in prompts:
            prompts.append(prompt)
        if len(prompts) == count:
            break
    return prompts
