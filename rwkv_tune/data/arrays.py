"""Token-id sources that need no tokenizer: numpy `.npy` arrays, raw uint16 files, synthetic dummy tokens.

- `numpy`: a 1-D integer array is one token stream; a 2-D array is one document per row; an object
  array (or a pickled list) is one document per element. Numeric arrays are memory-mapped. Object
  arrays are unpickled by an unpickler that only rebuilds numpy arrays, never running other code.
- `uint16`: a raw little-endian uint16 file (RWKV-LM's old `--data_type uint16`), memory-mapped.
- `dummy`: random ids in [1, vocab) of a given size and seed, each `doc_len` tokens ending in 0.

Streams (1-D numpy, uint16) keep their tokens exactly; their documents are the runs that end at an
end-of-document token 0, which is what `pad`/`only` sample, while `get` windows the whole stream.
Ids are used as given: no end token is appended. They are checked against the model's vocab by
`make_batches` (and against int32 by `data prepare`).
"""

from __future__ import annotations

import ast
import importlib
import pickle
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rwkv_tune.data.binidx import Documents
from rwkv_tune.data.tokenizer import EOD, VOCAB_SIZE
from rwkv_tune.errors import DataError

DUMMY_TOKENS = 1_000_000
DUMMY_DOC_LEN = 1024
_CHUNK = 1 << 24
_NPY_MAGIC = b"\x93NUMPY"
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kKmMgG]?)$")
_SCALE = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}
_FIX_ARRAY = "Save token ids as an integer array, e.g. np.save(path, np.asarray(ids, dtype=np.int32))."


def split_at_eod(tokens: np.ndarray, name: str) -> Documents:
    """A token stream as documents: each run ending at an end-of-document token 0 (the tail is one too)."""
    n = len(tokens)
    ends = [np.flatnonzero(np.asarray(tokens[lo:lo + _CHUNK]) == EOD) + (lo + 1) for lo in range(0, n, _CHUNK)]
    cut = np.concatenate(ends) if ends else np.zeros(0, np.int64)
    if not len(cut) or cut[-1] != n:
        cut = np.append(cut, n)
    starts = np.concatenate([[0], cut[:-1]]).astype(np.int64)
    return Documents(tokens, starts, cut - starts, name=name)


def _check_ids(arr: np.ndarray, what: str) -> None:
    if arr.dtype.kind not in "iu":
        raise DataError(f"{what} holds {arr.dtype} values, not integer token ids", _FIX_ARRAY)


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuild numpy arrays (and lists/ints) only: any other global in the pickle is refused."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
               ("numpy.core.multiarray", "scalar")}

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not a numpy array part")
        if module != "numpy":
            try:
                return getattr(importlib.import_module("numpy._core.multiarray"), name)
            except ImportError:  # numpy < 2
                return getattr(importlib.import_module("numpy.core.multiarray"), name)
        return getattr(np, name)


def _npy_header(path: Path) -> tuple[dict, int]:
    """The .npy header dict (descr, fortran_order, shape) and where the data starts; read as a literal."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 10 or not head.startswith(_NPY_MAGIC):
            raise DataError(f"{path} is not a .npy file (magic {head[:6]!r})", _FIX_ARRAY)
        size, start = (struct.unpack_from("<H", head, 8)[0], 10) if head[6] == 1 else \
            (struct.unpack_from("<I", head, 8)[0], 12)
        f.seek(start)
        text = f.read(size).decode("utf-8" if head[6] >= 3 else "latin1")
    try:
        header = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        header = None
    if not isinstance(header, dict) or "descr" not in header:
        raise DataError(f"{path} has a corrupt .npy header", _FIX_ARRAY)
    return header, start + size


def _object_documents(path: Path, offset: int) -> Documents:
    with open(path, "rb") as f:
        f.seek(offset)
        try:
            obj = _ArrayUnpickler(f).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
            raise DataError(f"{path}: object array cannot be read safely ({e})",
                            "Save documents as a list of integer arrays, nothing else.") from None
    items = list(obj.ravel()) if isinstance(obj, np.ndarray) else list(obj)
    docs = []
    for i, item in enumerate(items):
        a = np.asarray(item)
        if a.ndim != 1:
            raise DataError(f"{path}: document {i} has shape {a.shape}, not a 1-D list of token ids", _FIX_ARRAY)
        if a.size:
            _check_ids(a, f"{path}: document {i}")
        docs.append(a.astype(np.int64, copy=False))
    if not docs:
        raise DataError(f"{path} holds no documents", "Check the array.")
    lo = min((int(d.min()) for d in docs if d.size), default=0)
    hi = max((int(d.max()) for d in docs if d.size), default=0)
    dtype = np.uint16 if 0 <= lo and hi <= np.iinfo(np.uint16).max else np.int64
    return Documents.from_lists(docs, name=str(path), dtype=dtype)


def load_numpy(path: str | Path) -> Documents:
    """Documents of one `.npy` file: 1-D stream, 2-D rows, or object array of documents."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"numpy file {p} does not exist", "Check data.path.")
    header, offset = _npy_header(p)
    if header["descr"] in ("|O", "O"):
        return _object_documents(p, offset)
    try:
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise DataError(f"{p} is not a readable .npy array ({e})", _FIX_ARRAY) from None
    _check_ids(arr, str(p))
    if arr.size == 0:
        raise DataError(f"{p} is an empty array", "Check the array.")
    if arr.ndim == 1:
        return split_at_eod(arr, name=str(p))
    if arr.ndim == 2:
        rows, width = arr.shape
        flat = arr.reshape(-1) if arr.flags.c_contiguous else np.ascontiguousarray(arr).reshape(-1)
        return Documents(flat, np.arange(rows, dtype=np.int64) * width, np.full(rows, width, np.int64), name=str(p))
    raise DataError(f"{p} has shape {arr.shape}; expected 1-D (a token stream) or 2-D (one document per row)",
                    _FIX_ARRAY)


def load_uint16(path: str | Path) -> Documents:
    """A raw little-endian uint16 token file, memory-mapped, as one stream."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"uint16 token file {p} does not exist", "Check data.path.")
    size = p.stat().st_size
    if size == 0 or size % 2:
        what = "empty" if size == 0 else f"{size} bytes, an odd number"
        raise DataError(f"{p} is {what}: not a raw uint16 token file",
                        "Write the ids with np.asarray(ids, dtype='<u2').tofile(path).")
    return split_at_eod(np.memmap(p, dtype="<u2", mode="r"), name=str(p))


def concat(parts: Sequence[Documents], name: str) -> Documents:
    """Several token sources as one (tokens copied into memory)."""
    if len(parts) == 1:
        return parts[0]
    tokens = np.concatenate([np.asarray(d.tokens) for d in parts])
    offsets = np.cumsum([0] + [d.num_tokens for d in parts[:-1]])
    starts = np.concatenate([d.starts + off for d, off in zip(parts, offsets, strict=True)])
    return Documents(tokens, starts, np.concatenate([d.sizes for d in parts]), name=name)


@dataclass(frozen=True)
class DummySpec:
    """Size of the synthetic data: total tokens, tokens per document, seed (None: the caller's)."""

    tokens: int = DUMMY_TOKENS
    doc_len: int | None = None
    seed: int | None = None


def _size(value: str, what: str) -> int:
    m = _SIZE.match(value.strip())
    if not m:
        raise DataError(f"dummy data {what} {value!r} is not a number",
                        "Write e.g. dummy:1M, dummy:200k,doc_len=512,seed=1.")
    return int(float(m.group(1)) * _SCALE[m.group(2).lower()])


def parse_dummy(spec: str | Path) -> DummySpec:
    """'', 'dummy', '1M', 'dummy:200k,doc_len=512,seed=1' → DummySpec."""
    s = str(spec).strip()
    s = s[len("dummy"):].lstrip(":") if s.startswith("dummy") else s
    values: dict[str, int] = {}
    for i, part in enumerate(p.strip() for p in s.split(",") if p.strip()):
        key, sep, value = part.partition("=")
        if not sep:
            key, value = ("tokens" if i == 0 else "?"), part
        key = key.strip()
        if key not in ("tokens", "doc_len", "seed"):
            raise DataError(f"dummy data option {part!r} is not known", "Use tokens=N, doc_len=N or seed=N.")
        values[key] = _size(value, key)
    return DummySpec(**values)


def dummy_documents(tokens: int = DUMMY_TOKENS, *, doc_len: int = DUMMY_DOC_LEN, vocab_size: int = VOCAB_SIZE,
                    seed: int = 0) -> Documents:
    """`tokens` random ids in [1, vocab_size), deterministic for `seed`; every `doc_len`-th id (and the last) is 0."""
    if tokens < 2 or doc_len < 2 or vocab_size < 2:
        raise DataError(f"dummy data needs at least 2 tokens, doc_len ≥ 2 and vocab ≥ 2 (got {tokens}, {doc_len}, "
                        f"{vocab_size})", "Write e.g. dummy:1M.")
    dtype = np.uint16 if vocab_size <= VOCAB_SIZE else np.int32
    ids = np.random.default_rng(seed).integers(1, vocab_size, size=tokens, dtype=dtype)
    ids[doc_len - 1::doc_len] = EOD
    ids[-1] = EOD
    return split_at_eod(ids, name=f"dummy:{tokens},doc_len={doc_len},seed={seed}")
