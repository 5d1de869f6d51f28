"""binidx (Megatron `MMapIndexedDataset` v1): read any integer dtype by mmap, write uint16 atomically.

`<prefix>.idx` (little-endian): magic `MMIDIDX\\0\\0`, u64 version 1, u8 dtype code, u64 len,
u64 doc_count, int32 sizes[len], int64 byte pointers[len], int64 doc_idx[doc_count].
`<prefix>.bin`: the tokens of all items back to back in that dtype. One item is one document.
`<prefix>.meta.json` (ours, optional): how `data prepare` made the pair (tokenizer, inputs, loss markers…).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from rwkv_tune.checkpoint import atomic_path
from rwkv_tune.errors import DataError

MAGIC = b"MMIDIDX\x00\x00"
HEADER = struct.Struct("<9sQBQQ")
DTYPE_CODES: dict[int, type[np.integer]] = {
    1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 8: np.uint16,
}
CODE_OF = {np.dtype(v): k for k, v in DTYPE_CODES.items()}
META_FORMAT = "rwkv-tune-data/1"


def binidx_paths(prefix: str | Path) -> tuple[Path, Path]:
    """The .bin and .idx paths for a prefix given as `data`, `data.bin` or `data.idx`."""
    p = Path(prefix)
    if p.suffix in (".bin", ".idx"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".bin"), p.with_name(p.name + ".idx")


def is_binidx(path: str | Path) -> bool:
    """Whether `path` names an existing binidx pair."""
    b, i = binidx_paths(path)
    return b.is_file() and i.is_file()


def meta_path(prefix: str | Path) -> Path:
    """Where the metadata of a binidx prefix lives."""
    b, _ = binidx_paths(prefix)
    return b.with_suffix(".meta.json")


def read_meta(prefix: str | Path) -> dict[str, Any] | None:
    """The metadata written by `data prepare`, or None for binidx made by other tools."""
    p = meta_path(prefix)
    if not p.is_file():
        return None
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{p} is not valid JSON ({e})", "Delete it or re-run rwkv-tune data prepare.") from None
    return meta if isinstance(meta, dict) and meta.get("format") == META_FORMAT else None


def write_meta(prefix: str | Path, meta: dict[str, Any]) -> Path:
    """Write a binidx prefix's metadata (`format` is set to META_FORMAT) atomically; return its path."""
    path = meta_path(prefix)
    with atomic_path(path) as t:
        t.write_text(json.dumps({"format": META_FORMAT, **meta}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


class Documents:
    """Token documents: one flat token array (the stream `get` samples from) plus each document's span."""

    def __init__(self, tokens: np.ndarray, starts: np.ndarray, sizes: np.ndarray, name: str = "<memory>"):
        self.tokens = tokens
        self.starts = np.asarray(starts, dtype=np.int64)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.name = name

    @classmethod
    def from_lists(cls, docs: Iterable[Sequence[int] | np.ndarray], name: str = "<memory>",
                   dtype: type[np.integer] = np.uint16) -> Documents:
        """Documents held in memory, e.g. a small file tokenized on the fly or a test corpus."""
        arrays = [np.asarray(d, dtype=dtype) for d in docs]
        sizes = np.array([len(a) for a in arrays], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]) if len(sizes) else np.zeros(0, np.int64)
        tokens = np.concatenate(arrays) if arrays else np.zeros(0, dtype)
        return cls(tokens, starts, sizes, name)

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> np.ndarray:
        s = int(self.starts[i])
        return self.tokens[s:s + int(self.sizes[i])]

    @property
    def num_tokens(self) -> int:
        """Length of the flat token stream."""
        return int(len(self.tokens))

    def check_vocab(self, vocab_size: int, chunk: int = 1 << 24) -> None:
        """Refuse token ids outside [0, vocab_size), naming the first offending document and position."""
        toks = self.tokens
        for lo in range(0, len(toks), chunk):
            part = np.asarray(toks[lo:lo + chunk])
            bad = (part >= vocab_size) | (part < 0) if np.issubdtype(part.dtype, np.signedinteger) else part >= vocab_size
            if bad.any():
                pos = lo + int(np.argmax(bad))
                doc = int(np.searchsorted(self.starts, pos, side="right") - 1)
                raise DataError(
                    f"{self.name}: token id {int(toks[pos])} at position {pos} (document {doc}, "
                    f"offset {pos - int(self.starts[doc])}) is outside the model's vocab of {vocab_size}",
                    "Tokenize with the World tokenizer (rwkv-tune data prepare) or use a model with a larger vocab.",
                )


def read_binidx(prefix: str | Path) -> Documents:
    """Open a binidx pair without copying: both files are memory-mapped; any integer dtype code."""
    bin_path, idx_path = binidx_paths(prefix)
    for p in (idx_path, bin_path):
        if not p.is_file():
            raise DataError(f"data file {p} does not exist",
                            "Pass the prefix of a .bin/.idx pair made by rwkv-tune data prepare.")
    idx_size = idx_path.stat().st_size
    with open(idx_path, "rb") as f:
        head = f.read(HEADER.size)
    if len(head) < HEADER.size or head[:9] != MAGIC:
        raise DataError(f"{idx_path} is not a binidx index (magic {head[:9]!r}, expected {MAGIC!r})",
                        "Re-create it with rwkv-tune data prepare.")
    _, version, code, n, doc_count = HEADER.unpack(head)
    if version != 1:
        raise DataError(f"{idx_path} has binidx version {version}; only version 1 is supported",
                        "Re-create it with rwkv-tune data prepare.")
    if code not in DTYPE_CODES:
        what = "a float dtype, which cannot hold token ids" if code in (6, 7) else "unknown"
        raise DataError(f"{idx_path} has dtype code {code} ({what})",
                        "Re-create it with rwkv-tune data prepare (uint16).")
    expected = HEADER.size + 4 * n + 8 * n + 8 * doc_count
    if idx_size != expected:
        raise DataError(f"{idx_path} is {idx_size} bytes but its header (len={n}, doc_count={doc_count}) "
                        f"implies {expected}", "The file is truncated or corrupt; re-create it.")
    dtype = np.dtype(DTYPE_CODES[code])
    if n == 0 or bin_path.stat().st_size == 0:
        raise DataError(f"dataset {bin_path.with_suffix('')} is empty (0 documents or 0 tokens)",
                        "Check the input given to rwkv-tune data prepare.")
    sizes = np.memmap(idx_path, dtype=np.int32, mode="r", offset=HEADER.size, shape=(n,))
    pointers = np.memmap(idx_path, dtype=np.int64, mode="r", offset=HEADER.size + 4 * n, shape=(n,))
    bin_size = bin_path.stat().st_size
    ends = pointers + sizes.astype(np.int64) * dtype.itemsize
    if int(ends.max()) != bin_size or int(pointers.min()) < 0 or bin_size % dtype.itemsize:
        raise DataError(f"{bin_path} is {bin_size} bytes but {idx_path} says its items end at byte {int(ends.max())}",
                        "The .bin and .idx do not belong together or one is truncated; re-create both.")
    if np.any(pointers % dtype.itemsize):
        raise DataError(f"{idx_path} has item pointers not aligned to {dtype} ({dtype.itemsize} bytes)",
                        "The index is corrupt; re-create it.")
    tokens = np.memmap(bin_path, dtype=dtype, mode="r")
    return Documents(tokens, np.asarray(pointers) // dtype.itemsize, np.asarray(sizes), name=str(bin_path.with_suffix("")))


class BinIdxWriter:
    """Stream documents into `<prefix>.bin/.idx`; nothing appears under the final names unless all succeeded."""

    def __init__(self, prefix: str | Path, dtype: type[np.integer] = np.uint16):
        self.bin_path, self.idx_path = binidx_paths(prefix)
        self.dtype = np.dtype(dtype)
        self.sizes: list[int] = []
        self._stack = ExitStack()
        self._idx_tmp = self._stack.enter_context(atomic_path(self.idx_path))
        self._bin_tmp = self._stack.enter_context(atomic_path(self.bin_path))
        self._bin = self._stack.enter_context(open(self._bin_tmp, "wb"))
        self._limit = np.iinfo(self.dtype).max

    def add(self, ids: Sequence[int] | np.ndarray) -> None:
        """Append one document (one item) of token ids."""
        arr = np.asarray(ids)
        if arr.size and (int(arr.max()) > self._limit or int(arr.min()) < 0):
            raise DataError(f"token id {int(arr.max())} does not fit {self.dtype}", "Write with a wider dtype.")
        self._bin.write(arr.astype(self.dtype, copy=False).tobytes())
        self.sizes.append(int(arr.size))

    def add_many(self, flat: np.ndarray, sizes: Sequence[int]) -> None:
        """Append several documents given as one flat token array and their sizes."""
        flat = np.asarray(flat)
        if flat.size and (int(flat.max()) > self._limit or int(flat.min()) < 0):
            raise DataError(f"token id {int(flat.max())} does not fit {self.dtype}", "Write with a wider dtype.")
        if int(np.sum(sizes)) != flat.size:
            raise ValueError(f"sizes add up to {int(np.sum(sizes))}, but {flat.size} tokens were given")
        self._bin.write(flat.astype(self.dtype, copy=False).tobytes())
        self.sizes.extend(int(n) for n in sizes)

    def __enter__(self) -> BinIdxWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            try:
                self._bin.close()
                _write_index(self._idx_tmp, self.sizes, self.dtype)
            except BaseException as err:
                self._stack.__exit__(type(err), err, err.__traceback__)
                raise
        self._stack.__exit__(exc_type, exc, tb)


def _write_index(path: Path, sizes: Sequence[int], dtype: np.dtype) -> None:
    n = len(sizes)
    sizes_arr = np.asarray(sizes, dtype=np.int32)
    pointers = np.zeros(n, dtype=np.int64)
    if n:
        pointers[1:] = np.cumsum(sizes_arr[:-1].astype(np.int64)) * dtype.itemsize
    doc_idx = np.arange(n + 1, dtype=np.int64)
    with open(path, "wb") as f:
        f.write(HEADER.pack(MAGIC, 1, CODE_OF[dtype], n, n + 1))
        f.write(sizes_arr.astype("<i4").tobytes())
        f.write(pointers.astype("<i8").tobytes())
        f.write(doc_idx.astype("<i8").tobytes())


def write_binidx(prefix: str | Path, docs: Iterable[Sequence[int] | np.ndarray],
                 dtype: type[np.integer] = np.uint16) -> tuple[Path, Path]:
    """Write documents as one item each (doc_idx = 0..n), atomically; returns (.bin, .idx) paths."""
    with BinIdxWriter(prefix, dtype) as w:
        for d in docs:
            w.add(d)
    return w.bin_path, w.idx_path
