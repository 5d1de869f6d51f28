"""Open training data from a binidx prefix or raw files, and build a rank's batch iterator."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rwkv_tune.data.binidx import Documents, is_binidx, read_binidx
from rwkv_tune.data.masks import LossMarkers
from rwkv_tune.data.sampling import Batches
from rwkv_tune.data.sources import DocumentReader, SourceOptions
from rwkv_tune.errors import DataError

Source = str | Path | Sequence[str | Path] | Documents


def open_documents(source: Source, *, options: SourceOptions | None = None, eod: bool = True) -> Documents:
    """Documents from a binidx prefix (memory-mapped) or from jsonl/json/txt files (tokenized in memory)."""
    if isinstance(source, Documents):
        return source
    paths = [source] if isinstance(source, str | Path) else list(source)
    if len(paths) == 1 and is_binidx(paths[0]):
        return read_binidx(paths[0])
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise DataError(f"data {missing[0]} not found (neither a file nor a .bin/.idx prefix)",
                        "Check the path, or run rwkv-tune data prepare first.")
    from rwkv_tune.data.tokenizer import EOD, get_tokenizer

    reader = DocumentReader(paths, options)
    texts = [d.text for d in reader]
    if not texts:
        raise DataError(f"no documents found in {', '.join(map(str, paths))}", "Check the inputs and their format.")
    ids = get_tokenizer().encode_batch(texts)
    return Documents.from_lists([i + [EOD] if eod else i for i in ids], name=", ".join(map(str, paths)))


def default_markers(source: Source, options: SourceOptions | None = None) -> LossMarkers:
    """Loss-mask markers: from the data's metadata if `prepare` wrote it, else from the chat template."""
    if isinstance(source, str | Path) and is_binidx(source):
        from rwkv_tune.data.prepare import read_meta

        meta = read_meta(source)
        if meta and "loss_markers" in meta:
            m = meta["loss_markers"]
            return LossMarkers(learn=tuple(m["learn"]), stop=tuple(m["stop"]))
    return (options or SourceOptions()).template.markers()


def make_batches(source: Source, *, mode: str, ctx_len: int, micro_bsz: int, loss_mask: str = "pad",
                 seed: int = 0, rank: int = 0, world_size: int = 1, vocab_size: int | None = None,
                 pad_multiple: int = 16, shuffle: bool = True, full_coverage: bool = True,
                 markers: LossMarkers | None = None, options: SourceOptions | None = None) -> Batches:
    """The batch iterator a training rank consumes; checks token ids against `vocab_size` first."""
    docs = open_documents(source, options=options)
    if vocab_size is not None:
        docs.check_vocab(vocab_size)
    return Batches(docs, mode=mode, ctx_len=ctx_len, micro_bsz=micro_bsz, loss_mask=loss_mask, seed=seed,
                   rank=rank, world_size=world_size, pad_multiple=pad_multiple, shuffle=shuffle,
                   full_coverage=full_coverage, markers=markers or default_markers(source, options))
