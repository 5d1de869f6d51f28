"""Training data: World tokenizer, binidx, source formats, sampling modes, loss masks.

What the trainer uses (one iterator per rank)::

    from rwkv_tune.data import make_batches, IGNORE

    batches = make_batches(
        "data/train",              # binidx prefix (memory-mapped), or .jsonl/.json/.txt file(s)
        mode="pad",                # get | pad | only
        ctx_len=1024, micro_bsz=4,
        loss_mask="pad",           # pad | qa | sft | none
        seed=0, rank=rank, world_size=world_size,
        vocab_size=spec.vocab_size,  # refuses ids ≥ vocab, naming the first position
    )
    for w in batches.warnings(): ...   # truncation / coverage, to log before training
    x, y = next(batches)           # LongTensor[B, T]; y = next tokens, IGNORE (-100) where no loss
    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE)
    batches.epoch_steps, batches.step, batches.epoch
    state = batches.state_dict()   # save with the checkpoint (identical on all ranks)
    batches.load_state_dict(state) # on resume: the next batch is exactly the one that would have come

`T` is ctx_len (pad, get) or the row length (only), rounded up to `pad_multiple` (16 by default,
what the v7 kernels need); the extra positions are padding with IGNORE targets.
"""

from __future__ import annotations

from rwkv_tune.data.binidx import Documents, read_binidx, write_binidx
from rwkv_tune.data.loader import make_batches, open_documents
from rwkv_tune.data.masks import LOSS_MASKS, LossMarkers, loss_flags
from rwkv_tune.data.records import ChatTemplate, SourceOptions
from rwkv_tune.data.sampling import IGNORE, MODES, Batch, Batches, magic_prime
from rwkv_tune.data.stats import data_stats

__all__ = [
    "IGNORE", "LOSS_MASKS", "MODES", "Batch", "Batches", "ChatTemplate", "Documents", "LossMarkers",
    "SourceOptions", "data_stats", "loss_flags", "magic_prime", "make_batches", "open_documents",
    "read_binidx", "write_binidx",
]
