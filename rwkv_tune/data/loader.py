"""Open training data of any `data.type` as `Documents`, and build a rank's batch iterator.

Routing (`resolve_type`): a binidx prefix is memory-mapped whatever the type says; token types
(numpy, uint16, dummy) need no tokenizer; Hugging Face datasets (hub ids, save_to_disk folders,
.parquet/.csv/.arrow files, or json files with a `split`) go through `hf.py`; everything else is
read from local files by `DocumentReader` (jsonl / sft / chat / text in UTF-8 or UTF-16LE) and
tokenized with the World tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from rwkv_tune.data.binidx import Documents, read_binidx, read_meta
from rwkv_tune.data.detect import (
    DATA_TYPES,
    HF_FILE_SUFFIXES,
    TOKEN_TYPES,
    hf_source_kind,
    is_binidx,
    is_dummy,
)
from rwkv_tune.data.masks import LossMarkers
from rwkv_tune.data.readers import DocumentReader, RecordReader
from rwkv_tune.data.records import FORMATS, SourceOptions
from rwkv_tune.data.sampling import Batches
from rwkv_tune.errors import DataError

Source = str | Path | Sequence[str | Path] | Documents
KINDS = ("binidx", "numpy", "uint16", "dummy", "hf", "files")


def _paths(source: str | Path | Sequence[str | Path]) -> list[str | Path]:
    return [source] if isinstance(source, str | Path) else list(source)


def source_options(options: SourceOptions | None = None, type: str | None = None,
                   fields: Sequence[str] | None = None) -> SourceOptions:
    """Reader options for a data.type (utf-8/utf-16le → text in that encoding) and fields."""
    options = options or SourceOptions()
    if type is not None and type not in DATA_TYPES:
        raise DataError(f"format {type!r} is not known", f"Use one of: {', '.join(DATA_TYPES)}.")
    changes: dict = {}
    if type in FORMATS:
        changes["fmt"] = type
    elif type in ("utf-8", "utf-16le"):
        changes.update(fmt="text", encoding=type)
    elif type == "hf":
        changes["fmt"] = "auto"
    if fields:
        changes["fields"] = tuple(fields)
    return replace(options, **changes) if changes else options


def resolve_type(source: str | Path | Sequence[str | Path], type: str = "auto", split: str | None = None) -> str:
    """Which reader a source needs: binidx, numpy, uint16, dummy, hf or files (local jsonl/json/text)."""
    if type not in DATA_TYPES:
        raise DataError(f"format {type!r} is not known", f"Use one of: {', '.join(DATA_TYPES)}.")
    paths = _paths(source)
    if not paths:
        raise DataError("no data given", "Set data.path (or pass input files).")
    one = str(paths[0]) if len(paths) == 1 else None
    if type == "dummy" or (type == "auto" and one is not None and is_dummy(one)):
        kind = "dummy"
    elif one is not None and is_binidx(one):
        kind = "binidx"
    elif type in TOKEN_TYPES or type == "hf":
        kind = type
    elif type in ("text", "utf-8", "utf-16le"):
        kind = "files"
    elif one is not None and hf_source_kind(one) is not None:
        kind = "hf"
    elif split is not None and all(Path(p).suffix.lower() in HF_FILE_SUFFIXES for p in paths):
        kind = "hf"
    elif type == "auto" and all(Path(p).suffix.lower() == ".npy" for p in paths):
        kind = "numpy"
    else:
        kind = "files"
        bare_bin = next((Path(p) for p in paths if Path(p).suffix == ".bin" and Path(p).is_file()), None)
        if bare_bin is not None:
            raise DataError(f"{bare_bin} has no {bare_bin.with_suffix('.idx').name} beside it",
                            "For a raw uint16 token file set data.type: uint16 (--format uint16); for binidx, "
                            "put the .idx next to it.")
    if split is not None and kind != "hf":
        raise DataError(f"data.split {split!r} applies to Hugging Face datasets only, not to {kind} data",
                        "Remove data.split (--split), or point data.path at a dataset id or folder.")
    return kind


def token_documents(source: str | Path | Sequence[str | Path], kind: str, *, seed: int = 0,
                    vocab_size: int | None = None, doc_len: int | None = None) -> Documents:
    """Documents of a source that holds token ids already: binidx, numpy, uint16 or dummy."""
    from rwkv_tune.data import arrays

    paths = _paths(source)
    if kind == "binidx":
        if len(paths) != 1:
            raise DataError("binidx data is one prefix, not several inputs", "Pass one PREFIX.")
        return read_binidx(paths[0])
    if kind == "dummy":
        spec = arrays.parse_dummy(str(paths[0]) if len(paths) == 1 else "")
        return arrays.dummy_documents(spec.tokens, doc_len=spec.doc_len or doc_len or arrays.DUMMY_DOC_LEN,
                                      vocab_size=vocab_size or arrays.VOCAB_SIZE,
                                      seed=seed if spec.seed is None else spec.seed)
    load = {"numpy": arrays.load_numpy, "uint16": arrays.load_uint16}[kind]
    return arrays.concat([load(p) for p in paths], name=", ".join(map(str, paths)))


def document_reader(source: str | Path | Sequence[str | Path], options: SourceOptions, kind: str,
                    split: str | None = None) -> RecordReader:
    """The text reader of a `files` or `hf` source (both yield `Document`s with origins)."""
    if kind == "hf":
        from rwkv_tune.data.hf import HFReader

        return HFReader(source, options, split)
    return DocumentReader(_paths(source), options)


def open_documents(source: Source, *, options: SourceOptions | None = None, eod: bool = True,
                   type: str | None = None, fields: Sequence[str] | None = None, split: str | None = None,
                   seed: int = 0, vocab_size: int | None = None, doc_len: int | None = None) -> Documents:
    """Documents of any data type: binidx memory-mapped, arrays as given, text/records tokenized in memory.

    `type` is the preset's data.type (default: options.fmt, i.e. auto); `fields`/`split` select
    record fields and a Hugging Face split. `seed`, `vocab_size`, `doc_len` shape dummy data.
    `eod` appends the end-of-document token to tokenized text (token sources are used as given).
    """
    if isinstance(source, Documents):
        return source
    options = source_options(options, type, fields)
    kind = resolve_type(source, type or options.fmt, split)
    if kind in TOKEN_TYPES:
        return token_documents(source, kind, seed=seed, vocab_size=vocab_size, doc_len=doc_len)
    from rwkv_tune.data.tokenizer import EOD, get_tokenizer

    missing = [p for p in _paths(source) if not Path(p).exists()] if kind == "files" else []
    if missing:
        raise DataError(f"data {missing[0]} not found (neither a file nor a .bin/.idx prefix nor a Hugging Face "
                        "dataset id owner/name)", "Check the path, or run rwkv-tune data prepare first.")
    reader = document_reader(source, options, kind, split)
    texts = [d.text for d in reader]
    name = getattr(reader, "name", None) or ", ".join(map(str, _paths(source)))
    if not texts:
        raise DataError(f"no documents found in {name} ({reader.empty} empty, {len(reader.skipped)} invalid "
                        "skipped)", "Check the inputs, data.type and data.fields.")
    ids = get_tokenizer().encode_batch(texts)
    return Documents.from_lists([i + [EOD] if eod else i for i in ids], name=name)


def default_markers(source: Source, options: SourceOptions | None = None) -> LossMarkers:
    """Loss-mask markers: from the data's metadata if `prepare` wrote it, else from the chat template."""
    if isinstance(source, str | Path) and is_binidx(source):
        meta = read_meta(source)
        if meta and "loss_markers" in meta:
            m = meta["loss_markers"]
            return LossMarkers(learn=tuple(m["learn"]), stop=tuple(m["stop"]))
    return (options or SourceOptions()).template.markers()


def make_batches(source: Source, *, mode: str, ctx_len: int, micro_bsz: int, loss_mask: str = "pad",
                 seed: int = 0, rank: int = 0, world_size: int = 1, vocab_size: int | None = None,
                 pad_multiple: int = 16, shuffle: bool = True, full_coverage: bool = True,
                 markers: LossMarkers | None = None, options: SourceOptions | None = None,
                 type: str | None = None, fields: Sequence[str] | None = None,
                 split: str | None = None) -> Batches:
    """The batch iterator a training rank consumes; checks token ids against `vocab_size` first.

    `type`, `fields`, `split` are the preset's data.type / data.fields / data.split (defaults: auto,
    detected, none). Dummy data gets documents of ctx_len+1 tokens, ids below `vocab_size`, from `seed`.
    """
    options = source_options(options, type, fields)
    docs = open_documents(source, options=options, type=type, split=split, seed=seed, vocab_size=vocab_size,
                          doc_len=ctx_len + 1)
    if vocab_size is not None:
        docs.check_vocab(vocab_size)
    return Batches(docs, mode=mode, ctx_len=ctx_len, micro_bsz=micro_bsz, loss_mask=loss_mask, seed=seed,
                   rank=rank, world_size=world_size, pad_multiple=pad_multiple, shuffle=shuffle,
                   full_coverage=full_coverage, markers=markers or default_markers(source, options))
