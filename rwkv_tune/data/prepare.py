"""`data prepare` as a library function: read sources, tokenize in parallel, write binidx + metadata.

Outputs: `PREFIX.bin` / `PREFIX.idx` (uint16, one item per document, end-of-document 0 appended by
default, as RWKV-LM's make_data does) and `PREFIX.meta.json` (how it was made: inputs, format,
chat template, loss-mask markers, stats), each written atomically and never over an input.
Sources that hold token ids already (numpy, uint16, dummy, binidx) are converted as given: their
documents are copied without a tokenizer or an added end token, as uint16 when every id fits, else int32.

Speed: JSON parsing, tokenizing and packing ids into uint16 all hold the GIL, so threads cannot
overlap them. For local inputs of `POOL_MIN_BYTES` or more on Linux with cores to spare, the reader's
units (byte ranges of JSON lines, batches of texts) are parsed and tokenized by worker processes
forked once the tokenizer is loaded, and by this process, which also writes the tokens in order.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
import tempfile
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rwkv_tune.data.binidx import BinIdxWriter, Documents, binidx_paths, meta_path, read_binidx, write_meta
from rwkv_tune.data.detect import SUGGESTED_MASK, TOKEN_TYPES
from rwkv_tune.data.loader import document_reader, resolve_type, source_options, token_documents
from rwkv_tune.data.readers import RecordReader
from rwkv_tune.data.records import SourceOptions
from rwkv_tune.data.stats import data_stats
from rwkv_tune.data.tokenizer import VOCAB_NAME, get_tokenizer
from rwkv_tune.data.work_units import LineChunk, Unit
from rwkv_tune.errors import DataError

BATCH_CHARS = 1 << 20
POOL_MIN_BYTES = 8 << 20
MAX_WORKERS = 8
WRITE_CHUNK = 1 << 22
INT32_IDS = 1 << 31


@dataclass
class PrepareResult:
    """What `prepare` wrote and the stats it printed."""

    bin_path: Path
    idx_path: Path
    meta_path: Path
    stats: dict[str, Any]
    formats: dict[str, str]
    skipped: list[str] = field(default_factory=list)
    empty: int = 0
    text_bytes: int = 0
    workers: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The `--json` output."""
        return {"bin": str(self.bin_path), "idx": str(self.idx_path), "meta": str(self.meta_path),
                "formats": self.formats, "text_bytes": self.text_bytes, "empty_skipped": self.empty,
                "invalid_skipped": len(self.skipped), "skipped": self.skipped[:20], **self.stats}


Encoded = tuple[bytes, list[int], list[str], int]


def encode_unit(unit: Unit, eod: bool = True) -> Encoded:
    """Parse and tokenize one unit of a reader's work: packed uint16 ids, sizes, the records it
    skipped and how many of its documents were empty."""
    tok = get_tokenizer()
    if isinstance(unit, LineChunk):
        try:  # the tokenizer refuses lone surrogates itself: no separate check of every text
            texts, skipped, empty = unit.parse(utf8=True)
            return (*tok.encode_packed(texts, eod), skipped, empty)
        except DataError:  # parse again, checking: bad records are then skipped or reported in order
            pass
    texts, skipped, empty = unit.parse()
    return (*tok.encode_packed(texts, eod), skipped, empty)


def _encode_in_worker(unit: Unit, eod: bool) -> Encoded | None:
    """A worker's job, or None when it failed: the parent then redoes the unit itself, raising as it would."""
    try:
        return encode_unit(unit, eod)
    except Exception:
        return None


def pool_workers(total_bytes: int) -> int:
    """How many worker processes suit inputs of `total_bytes`: one per core left free besides this
    process, which works too; 0 (all here) for small inputs, off Linux (where fork is not the safe
    default), or when the load average says the cores are already busy (as `make -l` holds back jobs):
    on a saturated machine, workers only add their overhead to this process's share of the CPU.
    """
    if total_bytes < POOL_MIN_BYTES or not sys.platform.startswith("linux"):
        return 0
    cpus = len(os.sched_getaffinity(0))
    try:
        free = math.ceil(cpus - os.getloadavg()[0])
    except OSError:  # no load average to read
        free = cpus
    return max(0, min(cpus - 1, free, MAX_WORKERS))


class _Encoder:
    """Parse and tokenize a reader's units in order, here and in forked worker processes.

    Workers are forked at construction, after the tokenizer is loaded (each inherits it for free)
    and before a progress bar starts its thread; they tokenize text by text (`encode_packed`),
    never with the Rust thread pool, which does not survive fork. A unit a worker could not do is
    redone here, so errors are the same either way; a broken pool (a worker killed) falls back here.
    The skipped/empty counts of each unit go back to the reader in order.
    """

    def __init__(self, reader: RecordReader, eod: bool, workers: int):
        self.reader = reader
        self.eod = eod
        self.workers = workers if "fork" in multiprocessing.get_all_start_methods() else 0
        self.depth = 2 * self.workers  # units in flight in the workers
        self.held = 4 * (self.workers + 1)  # units done or in flight, waiting to be written in order
        self.pool: ProcessPoolExecutor | None = None
        get_tokenizer()
        if self.workers:
            self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("fork"))
            with warnings.catch_warnings():
                # Python 3.12+ warns of forking beside other threads (the Rust pool's, if it ran); the
                # workers only parse and tokenize text by text, which never touches that pool.
                warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
                self.pool.submit(int)  # forks all the workers now
        self._executor = self.pool

    def __enter__(self) -> _Encoder:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    def map(self, units: Iterable[Unit]) -> Iterator[tuple[np.ndarray, list[int]]]:
        """(flat uint16 tokens, sizes) of each unit, in the order given.

        With workers, a unit goes to them while fewer than `depth` are in flight; otherwise this
        process does it itself (so it works too, and sends no more than the workers keep up with).
        """
        if self.pool is None:
            for unit in units:
                yield self._done(encode_unit(unit, self.eod))
            return
        pending: deque[tuple[Unit, Future | None, Encoded | None]] = deque()
        it = iter(units)
        while True:
            try:
                unit = next(it)
                in_flight = sum(1 for _, f, _ in pending if f is not None and not f.done())
                future = self._submit(unit) if in_flight < self.depth else None
                pending.append((unit, future, None if future is not None else encode_unit(unit, self.eod)))
            except StopIteration:
                break
            except Exception:  # reading or encoding here failed: an earlier unit's error comes first
                while pending:
                    yield self._result(*pending.popleft())
                raise
            while pending and (pending[0][2] is not None or pending[0][1].done() or len(pending) > self.held):
                yield self._result(*pending.popleft())
        while pending:
            yield self._result(*pending.popleft())

    def _submit(self, unit: Unit) -> Future | None:
        if self.pool is None:
            return None
        try:
            return self.pool.submit(_encode_in_worker, unit.without_data() if isinstance(unit, LineChunk) else unit,
                                    self.eod)
        except BrokenProcessPool:
            self.pool = None
            return None

    def _result(self, unit: Unit, future: Future | None, done: Encoded | None) -> tuple[np.ndarray, list[int]]:
        if future is not None:
            try:
                done = future.result()
            except BrokenProcessPool:
                self.pool = None
        return self._done(encode_unit(unit, self.eod) if done is None else done)

    def _done(self, encoded: Encoded) -> tuple[np.ndarray, list[int]]:
        flat, sizes, skipped, empty = encoded
        self.reader.add_counts(skipped, empty)
        return np.frombuffer(flat, dtype="<u2"), sizes


def _progress(enabled: bool) -> Any:
    if not enabled:
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(TextColumn("tokenizing"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=Console(stderr=True), transient=True)


def _check_outputs(out: str | Path, inputs: Sequence[Path]) -> None:
    sources = {Path(f).resolve() for f in inputs}
    bin_path, idx_path = binidx_paths(out)
    for p in (bin_path, idx_path, meta_path(out)):
        if p.resolve() in sources:
            raise DataError(f"output {p} is also an input", "Choose another --out prefix.")
    bin_path.parent.mkdir(parents=True, exist_ok=True)


def _max_id(tokens: np.ndarray) -> int:
    return max(int(np.asarray(tokens[lo:lo + WRITE_CHUNK]).max()) for lo in range(0, len(tokens), WRITE_CHUNK))


def write_documents(out: str | Path, docs: Documents, order: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """Copy documents (in `order`) into `out`.bin/.idx as uint16 if every id fits, else int32.

    Returns the written sizes and the dtype name.
    """
    if not docs.num_tokens:
        raise DataError(f"{docs.name} holds no tokens", "Check the input.")
    docs.check_vocab(INT32_IDS)
    dtype = np.uint16 if _max_id(docs.tokens) <= np.iinfo(np.uint16).max else np.int32
    order = np.arange(len(docs)) if order is None else order
    with BinIdxWriter(out, dtype) as w:
        parts: list[np.ndarray] = []
        sizes: list[int] = []
        pending = 0
        for i in order.tolist():
            parts.append(np.asarray(docs[i]))
            sizes.append(len(parts[-1]))
            pending += sizes[-1]
            if pending >= WRITE_CHUNK:
                w.add_many(np.concatenate(parts), sizes)
                parts, sizes, pending = [], [], 0
        if parts:
            w.add_many(np.concatenate(parts), sizes)
    return np.asarray(docs.sizes[order], dtype=np.int64), np.dtype(dtype).name


def _prepare_tokens(inputs: Sequence[str | Path], out: str | Path, kind: str, *, shuffle: bool, seed: int,
                    ctx_len: int | None, micro_bsz: int, vocab_size: int | None) -> PrepareResult:
    docs = token_documents(inputs, kind, seed=seed, vocab_size=vocab_size,
                           doc_len=ctx_len + 1 if ctx_len else None)
    files = [Path(p) for p in inputs if Path(p).is_file()]
    if kind == "binidx":
        files += list(binidx_paths(inputs[0]))
    _check_outputs(out, files)
    if vocab_size is not None:
        docs.check_vocab(vocab_size)
    order = np.random.default_rng(seed).permutation(len(docs)) if shuffle else None
    sizes, dtype = write_documents(out, docs, order)
    stats = data_stats(sizes, ctx_len=ctx_len, micro_bsz=micro_bsz)
    bin_path, idx_path = binidx_paths(out)
    formats = {docs.name: kind}
    meta = {
        "tokenizer": None, "dtype": dtype, "eod": False, "shuffle": shuffle, "seed": seed,
        "inputs": [str(p) for p in inputs], "source_formats": formats, "suggested_loss_mask": "pad", "stats": stats,
    }
    return PrepareResult(bin_path, idx_path, write_meta(out, meta), stats, formats)


def prepare(inputs: Sequence[str | Path], out: str | Path, *, options: SourceOptions | None = None,
            eod: bool = True, shuffle: bool = False, seed: int = 0, ctx_len: int | None = None,
            micro_bsz: int = 1, progress: bool = False, type: str | None = None, split: str | None = None,
            vocab_size: int | None = None, workers: int | None = None) -> PrepareResult:
    """Tokenize documents from `inputs` (or copy token ids) into `out`.bin/.idx (+ .meta.json); return stats.

    `type` is a data.type (default: options.fmt); `split` a Hugging Face split; `seed` also seeds dummy
    data; `vocab_size` refuses token ids at or above it in token sources. `workers`: processes that
    parse and tokenize (0: all in this one; default: `pool_workers` of the input size); the output is
    the same whatever the number.
    """
    inputs = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    options = source_options(options, type)
    kind = resolve_type(inputs, type or options.fmt, split)
    if kind in TOKEN_TYPES:
        return _prepare_tokens(inputs, out, kind, shuffle=shuffle, seed=seed, ctx_len=ctx_len, micro_bsz=micro_bsz,
                               vocab_size=vocab_size)
    reader = document_reader(inputs, options, kind, split)
    bin_path, idx_path = binidx_paths(out)
    _check_outputs(out, reader.files)
    workers = pool_workers(reader.total_bytes) if workers is None else max(0, workers)
    with _Encoder(reader, eod, workers) as encoder, _progress(progress) as bar:
        task = bar.add_task("tokenize", total=reader.total_bytes or None) if bar is not None else None
        with tempfile.TemporaryDirectory(dir=bin_path.parent, prefix=".prepare-") as tmp:
            stage = Path(tmp) / "stage" if shuffle else out
            with BinIdxWriter(stage) as w:
                for flat, sizes in encoder.map(reader.units(BATCH_CHARS)):
                    w.add_many(flat, sizes)
                    if bar is not None:
                        bar.update(task, completed=reader.bytes_read)
                if not w.sizes:
                    where = getattr(reader, "name", None) or f"{len(reader.files)} input file(s)"
                    raise DataError(f"no documents found in {where} ({reader.empty} empty, {len(reader.skipped)} "
                                    "invalid skipped)", "Check the inputs and --format/--fields.")
            sizes = np.asarray(w.sizes, dtype=np.int64)
            if shuffle:
                staged = read_binidx(stage)
                order = np.random.default_rng(seed).permutation(len(sizes))
                with BinIdxWriter(out) as final:
                    for i in order:
                        final.add(staged[int(i)])
                sizes = sizes[order]
                del staged
    stats = data_stats(sizes, ctx_len=ctx_len, micro_bsz=micro_bsz)
    fmts = sorted(set(reader.formats.values()))
    template = options.template
    meta = {
        "tokenizer": VOCAB_NAME, "dtype": "uint16", "eod": eod, "shuffle": shuffle,
        "seed": seed, "inputs": [str(f) for f in reader.files] or [str(p) for p in inputs],
        "source_formats": reader.formats, "split": split,
        "chat_template": template.to_dict(), "loss_markers": template.markers().to_dict(),
        "suggested_loss_mask": SUGGESTED_MASK.get(fmts[0], "pad") if len(fmts) == 1 else "pad", "stats": stats,
    }
    return PrepareResult(bin_path, idx_path, write_meta(out, meta), stats, reader.formats, reader.skipped,
                         reader.empty, reader.bytes_read, encoder.workers)
