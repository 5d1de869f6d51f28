"""What the model will learn from: the first samples of a loader, decoded, loss-carrying tokens marked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rwkv_tune.data.sampling import IGNORE, Batches

if TYPE_CHECKING:  # pragma: no cover
    from rich.text import Text

    from rwkv_tune.data.tokenizer import WorldTokenizer

LEARN_STYLE = "bold green"
CONTEXT_STYLE = "dim"
EOD_TEXT = "⟨eod⟩"


@dataclass
class SamplePreview:
    """One sample's tokens (document or window), which of them carry loss, and how many were cut."""

    index: int
    tokens: np.ndarray
    learned: np.ndarray
    cut: int

    def segments(self, tokenizer: WorldTokenizer, max_tokens: int | None = None) -> list[tuple[str, bool]]:
        """(text, learned) runs: consecutive tokens with the same flag decoded together (keeps UTF-8 whole)."""
        toks, flags = self.tokens[:max_tokens], self.learned[:max_tokens]
        out: list[tuple[str, bool]] = []
        start = 0
        for j in range(1, len(toks) + 1):
            if j == len(toks) or flags[j] != flags[start] or toks[j] == 0 or toks[j - 1] == 0:
                piece = toks[start:j]
                text = EOD_TEXT * len(piece) if len(piece) and piece[0] == 0 else tokenizer.decode(piece)
                out.append((text, bool(flags[start])))
                start = j
        return out

    def to_dict(self, tokenizer: WorldTokenizer) -> dict[str, Any]:
        """JSON form for `data inspect --json`."""
        return {"index": self.index, "tokens": int(len(self.tokens)), "loss_tokens": int(self.learned.sum()),
                "cut_tokens": self.cut, "text": tokenizer.decode(self.tokens),
                "learned_text": "".join(t for t, f in self.segments(tokenizer) if f)}


def preview(batches: Batches, n: int) -> list[SamplePreview]:
    """The first `n` rows of `batches` (rank's order) as token sequences with per-token learned flags."""
    out: list[SamplePreview] = []
    step = 0
    while len(out) < n and step < batches.epoch_steps:
        for i, (x, y) in zip(batches.indices(step), batches.rows(step), strict=True):
            i = int(i)
            if batches.mode == "get":
                full = np.asarray(batches.docs.tokens[i:i + batches.ctx_len + 1], dtype=np.int64)
            else:
                full = np.asarray(batches.docs[i], dtype=np.int64)
            seq = np.append(x, full[len(x)]) if len(full) > len(x) else x
            learned = np.concatenate([[False], y != IGNORE])[:len(seq)]
            out.append(SamplePreview(i, seq, learned, cut=max(0, len(full) - len(seq))))
            if len(out) == n:
                break
        step += 1
    return out


def render(sample: SamplePreview, tokenizer: WorldTokenizer, max_tokens: int | None = None) -> Text:
    """A rich Text of the sample: learned tokens in green, context dim, a note on what was cut."""
    from rich.text import Text

    text = Text()
    for piece, learned in sample.segments(tokenizer, max_tokens):
        text.append(piece, style=LEARN_STYLE if learned else CONTEXT_STYLE)
    hidden = len(sample.tokens) - (max_tokens or len(sample.tokens))
    if hidden > 0:
        text.append(f" … {hidden} more tokens not shown", style="italic")
    if sample.cut:
        text.append(f" ✂ {sample.cut} tokens beyond ctx_len are cut", style="bold red")
    return text
