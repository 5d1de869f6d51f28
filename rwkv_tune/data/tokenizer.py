"""The RWKV World tokenizer: fast Rust encoding (`pyrwkv-tokenizer`), byte-exact decoding.

Encoding is greedy longest match over UTF-8 bytes (identical ids to the `rwkv` package's
TRIE tokenizer); `encode_batch` runs on the Rust side's threads, `encode_packed` on the caller's
thread straight into uint16 bytes (what `data prepare` writes). Decoding uses our own
id → bytes table so that end-of-document (id 0), padding rows and tokens that are partial UTF-8
characters never crash, and so that masks can map tokens to byte offsets.
"""

from __future__ import annotations

import ast
import struct
from collections.abc import Iterable, Sequence
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

from rwkv_tune.errors import DataError

EOD = 0
VOCAB_SIZE = 65536
VOCAB_NAME = "rwkv_vocab_v20230424"


def _surrogate_error(text: str) -> DataError:
    bad = next(i for i, ch in enumerate(text) if 0xD800 <= ord(ch) <= 0xDFFF)
    return DataError(
        f"text contains a lone surrogate U+{ord(text[bad]):04X} at character {bad}, which is not valid UTF-8",
        "Fix the source text (often a broken \\uD8xx escape in JSON).",
    )


class WorldTokenizer:
    """RWKV World tokenizer (65536 rows, id 0 = end of document)."""

    eod = EOD
    vocab_size = VOCAB_SIZE
    name = VOCAB_NAME

    def __init__(self) -> None:
        import pyrwkv_tokenizer

        self._rust = pyrwkv_tokenizer.RWKVTokenizer()
        self.vocab_path = Path(self._rust.vocab_filepath)
        # The Rust object's own single-text encode (no Python wrapper call per document).
        self._encode_one = getattr(self._rust, "tokenizer", self._rust).encode

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (no end-of-document token added)."""
        try:
            return self._rust.encode(text)
        except UnicodeEncodeError:
            raise _surrogate_error(text) from None

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of many texts at once, encoded in parallel on the Rust side."""
        try:
            return self._rust.encode_batch(list(texts))
        except UnicodeEncodeError:
            raise _surrogate_error(next(t for t in texts if not _is_utf8(t))) from None

    def encode_packed(self, texts: Iterable[str], eod: bool = True) -> tuple[bytes, list[int]]:
        """Token ids of many texts as one little-endian uint16 buffer, each text followed by the end token
        when `eod`, and each text's token count (end token included).

        Encodes text by text on the calling thread: no Rust thread pool is started, so it is safe in a
        forked worker process (`encode_batch` there would wait forever on the parent's pool threads,
        which do not survive fork). Each text's ids are packed at once by `struct`, about twice as
        cheap as numpy's conversion of the Python ints the Rust side returns.
        """
        encode, pack = self._encode_one, struct.pack
        tail = struct.pack("<H", EOD) if eod else b""
        parts: list[bytes] = []
        sizes: list[int] = []
        for text in texts:
            try:
                ids = encode(text)
            except UnicodeEncodeError:
                raise _surrogate_error(text) from None
            parts.append(pack(f"<{len(ids)}H", *ids))
            parts.append(tail)
            sizes.append(len(ids) + eod)
        return b"".join(parts), sizes

    @cached_property
    def _table(self) -> list[bytes]:
        table = [b""] * VOCAB_SIZE
        with open(self.vocab_path, encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\r\n")
                if not line:
                    continue
                first, last = line.index(" "), line.rindex(" ")
                value = ast.literal_eval(line[first + 1:last])
                raw = value.encode("utf-8") if isinstance(value, str) else value
                if len(raw) != int(line[last + 1:]):
                    raise DataError(f"vocab file {self.vocab_path} is corrupt at id {line[:first]}",
                                    "Reinstall pyrwkv-tokenizer.")
                table[int(line[:first])] = raw
        return table

    @cached_property
    def token_lengths(self) -> np.ndarray:
        """Byte length of every id (0 for id 0 and the unused padding rows)."""
        return np.array([len(b) for b in self._table], dtype=np.int64)

    def token_bytes(self, token: int) -> bytes:
        """The raw bytes of one token (b'' for end-of-document and padding rows)."""
        return self._table[token]

    def decode_bytes(self, ids: Sequence[int] | np.ndarray) -> bytes:
        """Concatenated bytes of `ids`; ids outside the vocab raise a DataError."""
        table = self._table
        try:
            return b"".join([table[int(i)] for i in ids])
        except IndexError:
            bad = next(int(i) for i in ids if not 0 <= int(i) < VOCAB_SIZE)
            raise DataError(f"token id {bad} is outside the World vocab (0..{VOCAB_SIZE - 1})",
                            "The data was tokenized with another tokenizer; re-run rwkv-tune data prepare.") from None

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of `ids`; bytes that are not valid UTF-8 become U+FFFD instead of failing."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@lru_cache(maxsize=1)
def get_tokenizer() -> WorldTokenizer:
    """The shared World tokenizer (loading the vocab costs time, so load it once)."""
    return WorldTokenizer()
