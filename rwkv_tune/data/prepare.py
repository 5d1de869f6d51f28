"""`data prepare` as a library function: read sources, tokenize in parallel, write binidx + metadata.

Outputs: `PREFIX.bin` / `PREFIX.idx` (uint16, one item per document, end-of-document 0 appended by
default, as RWKV-LM's make_data does) and `PREFIX.meta.json` (how it was made: inputs, format,
chat template, loss-mask markers, stats), each written atomically and never over an input.
"""

from __future__ import annotations

import json
import struct
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rwkv_tune.data.binidx import BinIdxWriter, binidx_paths, read_binidx
from rwkv_tune.data.sources import Document, DocumentReader, SourceOptions
from rwkv_tune.data.stats import data_stats
from rwkv_tune.data.tokenizer import EOD, VOCAB_NAME, get_tokenizer
from rwkv_tune.errors import DataError

META_FORMAT = "rwkv-tune-data/1"
BATCH_CHARS = 1 << 20
SUGGESTED_MASK = {"sft": "sft", "chat": "qa", "jsonl": "pad", "text": "pad"}


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

    def to_dict(self) -> dict[str, Any]:
        """The `--json` output."""
        return {"bin": str(self.bin_path), "idx": str(self.idx_path), "meta": str(self.meta_path),
                "formats": self.formats, "text_bytes": self.text_bytes, "empty_skipped": self.empty,
                "invalid_skipped": len(self.skipped), "skipped": self.skipped[:20], **self.stats}


def meta_path(prefix: str | Path) -> Path:
    """Where the metadata of a binidx prefix lives."""
    b, _ = binidx_paths(prefix)
    return b.with_suffix(".meta.json")


def read_meta(prefix: str | Path) -> dict[str, Any] | None:
    """The metadata written by `prepare`, or None for binidx made by other tools."""
    p = meta_path(prefix)
    if not p.is_file():
        return None
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{p} is not valid JSON ({e})", "Delete it or re-run rwkv-tune data prepare.") from None
    return meta if isinstance(meta, dict) and meta.get("format") == META_FORMAT else None


def _batches(docs: Iterator[Document], limit: int = BATCH_CHARS) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for d in docs:
        batch.append(d.text)
        size += len(d.text)
        if size >= limit:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def encode_chunk(texts: list[str], eod: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Tokenize a batch of texts into one flat uint16 array (+ end token per document) and the sizes."""
    ids = get_tokenizer().encode_batch(texts)
    tail = struct.pack("<H", EOD) if eod else b""
    flat = b"".join([struct.pack(f"<{len(i)}H", *i) + tail for i in ids])
    sizes = np.fromiter((len(i) + eod for i in ids), dtype=np.int64, count=len(ids))
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


def prepare(inputs: Sequence[str | Path], out: str | Path, *, options: SourceOptions | None = None,
            eod: bool = True, shuffle: bool = False, seed: int = 0, ctx_len: int | None = None,
            micro_bsz: int = 1, progress: bool = False) -> PrepareResult:
    """Tokenize documents from `inputs` into `out`.bin/.idx (+ .meta.json) and return their stats."""
    options = options or SourceOptions()
    reader = DocumentReader(inputs, options)
    bin_path, idx_path = binidx_paths(out)
    mpath = meta_path(out)
    sources = {f.resolve() for f in reader.files}
    for p in (bin_path, idx_path, mpath):
        if p.resolve() in sources:
            raise DataError(f"output {p} is also an input", "Choose another --out prefix.")
    bin_path.parent.mkdir(parents=True, exist_ok=True)
    with _progress(progress) as bar:
        task = bar.add_task("tokenize", total=reader.total_bytes) if bar is not None else None
        with tempfile.TemporaryDirectory(dir=bin_path.parent, prefix=".prepare-") as tmp:
            stage = Path(tmp) / "stage" if shuffle else out
            with BinIdxWriter(stage) as w:
                for texts in _batches(iter(reader)):
                    w.add_many(*encode_chunk(texts, eod))
                    if bar is not None:
                        bar.update(task, completed=reader.bytes_read)
                if not w.sizes:
                    raise DataError(
                        f"no documents found in {len(reader.files)} input file(s) ({reader.empty} empty, "
                        f"{len(reader.skipped)} invalid skipped)", "Check the inputs and --format/--fields.")
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
        "format": META_FORMAT, "tokenizer": VOCAB_NAME, "dtype": "uint16", "eod": eod, "shuffle": shuffle,
        "seed": seed, "inputs": [str(f) for f in reader.files], "source_formats": reader.formats,
        "chat_template": template.to_dict(), "loss_markers": template.markers().to_dict(),
        "suggested_loss_mask": SUGGESTED_MASK[fmts[0]] if len(fmts) == 1 else "pad", "stats": stats,
    }
    from rwkv_tune.checkpoint import atomic_path

    with atomic_path(mpath) as t:
        t.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return PrepareResult(bin_path, idx_path, mpath, stats, reader.formats, reader.skipped, reader.empty,
                         reader.bytes_read)
