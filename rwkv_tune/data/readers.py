"""Read documents from user files: jsonl text, SFT records, chat messages, plain text (UTF-8 or UTF-16LE).

Every document comes with its origin (`file:line`) so that a bad record is reported where it is.
Records are rendered by `records.py`; `units` hands the same documents out as `work_units`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rwkv_tune.data.records import FORMATS, Document, RecordParser, SourceOptions, renderer, resolve_format
from rwkv_tune.data.work_units import LineChunk, TextBatch, line_blocks
from rwkv_tune.errors import DataError

ENCODINGS = ("utf-8", "utf-16le")
TEXT_SUFFIXES = {".txt", ".md", ".text"}
JSON_SUFFIXES = {".json", ".jsonl", ".ndjson"}
_BOM = "\ufeff"
READ_BUFFER = 1 << 20  # lines are often longer than the default 8 KiB buffer, which then costs a read() each


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files named by the inputs; folders contribute their .jsonl/.json/.txt/.md files, sorted."""
    files: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in TEXT_SUFFIXES | JSON_SUFFIXES)
            if not found:
                raise DataError(f"folder {p} has no .jsonl/.json/.txt/.md files", "Pass the data files themselves.")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"input {p} does not exist", "Check the path.")
    if not files:
        raise DataError("no input files given", "Pass one or more .jsonl/.json/.txt files.")
    return files


class RecordReader(RecordParser):
    """What every document source shares: the options, bad-record policy, counters, record rendering.

    Subclasses (files here, Hugging Face datasets in `hf.py`) set `files`, `total_bytes` and iterate
    `Document`s; `prepare` and `open_documents` only use this interface.
    """

    def __init__(self, options: SourceOptions | None = None):
        super().__init__(options)
        if self.options.fmt not in FORMATS:
            raise DataError(f"format {self.options.fmt!r} is not known", f"Use one of: {', '.join(FORMATS)}.")
        if self.options.text_docs not in ("blank", "file"):
            raise DataError(f"text split {self.options.text_docs!r} is not known", "Use 'blank' or 'file'.")
        if self.options.encoding not in ENCODINGS:
            raise DataError(f"text encoding {self.options.encoding!r} is not supported",
                            f"Use one of: {', '.join(ENCODINGS)} (or convert the file to UTF-8).")
        self.files: list[Path] = []
        self.total_bytes = 0
        self.formats: dict[str, str] = {}

    def __iter__(self) -> Iterator[Document]:  # pragma: no cover - overridden
        raise NotImplementedError

    def _render(self, key: str, records: Iterable[tuple[str, dict[str, Any]]], fmt: str) -> Iterator[Document]:
        """Records (origin, dict) → documents in format `fmt` (auto: detected from the first record)."""
        render = None
        for origin, rec in records:
            if render is None:
                fmt, render = renderer(fmt, rec, self.options, origin)
                self.formats[key] = fmt
            text = self.record_text(render, origin, rec)
            if text is not None:
                yield Document(text, origin)

    def units(self, limit: int) -> Iterator[TextBatch | LineChunk]:
        """The documents in order as work: `TextBatch`es of about `limit` characters, or (where a reader
        can) `LineChunk`s of about `limit` bytes left to parse. `parse()` gives a unit's texts, skipped
        records and empty count; the caller gives the last two back with `add_counts`, in order.
        """
        yield from self._batches(iter(self), limit)

    def add_counts(self, skipped: Sequence[str], empty: int) -> None:
        """Account for the records a unit skipped and its empty documents."""
        self.skipped.extend(skipped)
        self.empty += empty

    def _batches(self, docs: Iterable[Document], limit: int) -> Iterator[TextBatch]:
        """Batches of the texts of `docs`, each holding the skips and empty documents met while reading
        it, taken off this reader's counts (nothing else counts while this generator runs)."""
        texts: list[str] = []
        size = 0
        mark = (len(self.skipped), self.empty)

        def take() -> TextBatch:
            skipped = self.skipped[mark[0]:]
            del self.skipped[mark[0]:]
            empty, self.empty = self.empty - mark[1], mark[1]
            return TextBatch(texts, skipped, empty)

        for d in docs:
            texts.append(d.text)
            size += len(d.text)
            if size >= limit:
                yield take()
                texts, size = [], 0
                mark = (len(self.skipped), self.empty)  # add_counts may have run meanwhile
        batch = take()
        if batch.texts or batch.skipped or batch.empty:
            yield batch


class DocumentReader(RecordReader):
    """Iterate the documents of several files, counting what was skipped and how many bytes were read."""

    def __init__(self, inputs: Sequence[str | Path], options: SourceOptions | None = None):
        super().__init__(options)
        self.files = expand_inputs(inputs)
        self.total_bytes = sum(f.stat().st_size for f in self.files)

    def __iter__(self) -> Iterator[Document]:
        for path in self.files:
            yield from self._documents(path)

    def _is_text(self, path: Path) -> bool:
        return self.options.fmt == "text" or (self.options.fmt == "auto" and path.suffix in TEXT_SUFFIXES)

    def _documents(self, path: Path) -> Iterator[Document]:
        if self._is_text(path):
            self.formats[str(path)] = "text" if self.options.encoding == "utf-8" else self.options.encoding
            yield from self._text(path)
        else:
            yield from self._render(str(path), self._json_records(path), self.options.fmt)

    def units(self, limit: int) -> Iterator[TextBatch | LineChunk]:
        """As `RecordReader.units`; a JSON-lines file whose first line is a record goes out as `LineChunk`s."""
        for path in self.files:
            settled = self._line_format(path)
            if settled is None:
                yield from self._batches(self._documents(path), limit)
                continue
            fmt, fields = settled
            self.formats[str(path)] = fmt
            for first_line, start, data in line_blocks(path, limit):
                self.bytes_read += len(data)
                yield LineChunk(str(path), first_line, start, start + len(data), fmt, fields, self.options, data)

    def _line_format(self, path: Path) -> tuple[str, tuple[str, ...]] | None:
        """(format, fields) of a JSON-lines file from its first line, or None when that is not a plain
        record (empty file, JSON array, bad first line, undecidable format): then the file is read in order."""
        if self._is_text(path):
            return None
        with open(path, "rb") as f:
            if f.read(4096).lstrip().startswith(b"["):
                return None
            f.seek(0)
            for no, raw in enumerate(f, 1):
                if raw.isspace():
                    continue
                try:
                    rec = json.loads(raw.decode("utf-8"))
                    return resolve_format(self.options.fmt, rec, self.options, f"{path}:{no}") \
                        if isinstance(rec, dict) else None
                except Exception:  # bad UTF-8 or JSON, undecidable format: reading in order reports it
                    return None
        return None

    def _text(self, path: Path) -> Iterator[Document]:
        enc = self.options.encoding
        if self.options.text_docs == "file":
            raw = path.read_bytes()
            self.bytes_read += len(raw)
            try:
                text = raw.decode(enc)
            except UnicodeDecodeError as e:
                self._bad(f"{path}:{_line_of(raw, e.start, enc)}", _invalid(raw, e, enc))
                return
            text = text.removeprefix(_BOM).replace("\r\n", "\n").rstrip("\n")
            if self._keep(text, str(path), utf8=True):
                yield Document(text, str(path))
            return
        lines: list[str] = []
        start, bad = 0, False
        for no, line in self._lines(path):
            if line is None:
                bad, line = True, "x\n"
            if line.strip():
                if not lines:
                    start = no
                lines.append(line.replace("\r\n", "\n"))
                continue
            if lines and not bad:
                yield from self._paragraph(lines, f"{path}:{start}")
            lines, bad = [], False
        if lines and not bad:
            yield from self._paragraph(lines, f"{path}:{start}")

    def _paragraph(self, lines: list[str], origin: str) -> Iterator[Document]:
        text = "".join(lines).rstrip("\n")
        if self._keep(text, origin, utf8=True):
            yield Document(text, origin)

    def _lines(self, path: Path) -> Iterator[tuple[int, str | None]]:
        """(line number, decoded line with its newline), or None for a line that is not valid in the encoding.

        UTF-8 streams line by line; UTF-16LE is read whole and split at newline code units.
        """
        enc = self.options.encoding
        with open(path, "rb", buffering=READ_BUFFER) as f:
            raws: Iterable[bytes] = _utf16le_lines(f.read()) if enc == "utf-16le" else f
            for no, raw in enumerate(raws, 1):
                self.bytes_read += len(raw)
                try:
                    line = raw.decode(enc)
                except UnicodeDecodeError as e:
                    self._bad(f"{path}:{no}", _invalid(raw, e, enc))
                    yield no, None
                    continue
                yield no, line.removeprefix(_BOM) if no == 1 else line

    def _json_records(self, path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
        with open(path, "rb") as f:
            head = f.read(4096).lstrip()
        if head.startswith(b"["):
            raw = path.read_bytes()
            self.bytes_read += len(raw)
            try:
                items = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{_line_of(raw, e.start)}: invalid UTF-8 (byte 0x{raw[e.start]:02x})",
                                "Re-encode the file as UTF-8.") from None
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg})", "Fix the file.") from None
            for i, rec in enumerate(items):
                if isinstance(rec, dict):
                    yield f"{path}[{i}]", rec
                else:
                    self._bad(f"{path}[{i}]", f"expected a JSON object, got {type(rec).__name__}")
            return
        with open(path, "rb", buffering=READ_BUFFER) as f:
            yield from self.json_lines(str(path), f, 1)


def _line_of(raw: bytes, pos: int, encoding: str = "utf-8") -> int:
    if encoding == "utf-16le":
        return raw[:pos - pos % 2].decode(encoding, errors="replace").count("\n") + 1
    return raw.count(b"\n", 0, pos) + 1


def _invalid(raw: bytes, e: UnicodeDecodeError, encoding: str) -> str:
    """What is wrong with undecodable bytes, e.g. 'invalid UTF-8 (byte 0xe9)'."""
    name = "UTF-8" if encoding == "utf-8" else "UTF-16LE"
    if encoding == "utf-16le":
        return f"invalid {name} ({e.reason} at byte {e.start})"
    return f"invalid {name} (byte 0x{raw[e.start]:02x})"


def _utf16le_lines(raw: bytes) -> Iterator[bytes]:
    """Split UTF-16LE bytes after each newline code unit (0x000A at an even offset); a BOM stays on line 1."""
    units = np.frombuffer(raw, dtype="<u2", count=len(raw) // 2)
    ends = (np.flatnonzero(units == 0x0A) + 1) * 2
    start = 0
    for end in ends.tolist():
        yield raw[start:end]
        start = end
    if start < len(raw):
        yield raw[start:]
