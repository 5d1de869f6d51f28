"""Read documents from user files: jsonl text, SFT records, chat messages, plain text (UTF-8 or UTF-16LE).

Every document comes with its origin (`file:line`) so that a bad record is reported where it is.
SFT and chat records are rendered in RWKV's chat format (`User: …\\n\\nAssistant: …`) through one
`ChatTemplate`, which also yields the role markers the `qa`/`sft` loss masks look for.

`units` hands the same documents out as work: batches of texts (`TextBatch`), or chunks of JSON-lines
bytes whose format is settled (`LineChunk`), which any process can parse and render like the reader.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from rwkv_tune.data.masks import LossMarkers
from rwkv_tune.errors import DataError

FORMATS = ("auto", "jsonl", "sft", "chat", "text")
ENCODINGS = ("utf-8", "utf-16le")
TEXT_SUFFIXES = {".txt", ".md", ".text"}
JSON_SUFFIXES = {".json", ".jsonl", ".ndjson"}
SFT_FIELDS = (
    ("instruction", "input", "output"), ("instruction", "output"), ("query", "response"),
    ("prompt", "response"), ("prompt", "completion"), ("question", "answer"), ("input", "output"),
)
CHAT_FIELDS = ("messages", "conversations")
ROLE_ALIASES = {
    "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant", "bot": "assistant",
    "model": "assistant", "system": "system",
}
_BLANK_RUN = re.compile(r"\n{2,}")
_BOM = "\ufeff"
_SKIP_FIX = "Fix it, or pass --skip-invalid to skip bad records."
READ_BUFFER = 1 << 20  # lines are often longer than the default 8 KiB buffer, which then costs a read() each


@dataclass(frozen=True)
class ChatTemplate:
    """How turns are rendered: `{role}: {content}` joined by blank lines, RWKV's chat convention."""

    user: str = "User"
    assistant: str = "Assistant"
    system: str = "System"
    turn: str = "{role}: {content}"
    sep: str = "\n\n"
    collapse_blank_lines: bool = True

    def role_name(self, role: str) -> str:
        """The displayed name of a canonical role (user, assistant, system)."""
        return {"user": self.user, "assistant": self.assistant, "system": self.system}[role]

    def render(self, turns: Sequence[tuple[str, str]]) -> str:
        """Render (role, content) pairs; blank lines inside content collapse so they cannot fake a turn."""
        out = []
        for role, content in turns:
            content = content.replace("\r\n", "\n").strip()
            if self.collapse_blank_lines:
                content = _BLANK_RUN.sub("\n", content)
            out.append(self.turn.format(role=self.role_name(role), content=content))
        return self.sep.join(out)

    def prefix(self, role: str) -> str:
        """The text that starts a turn of `role`, e.g. 'Assistant:'."""
        return self.turn.split("{content}")[0].format(role=self.role_name(role)).rstrip()

    def markers(self) -> LossMarkers:
        """Role markers for the qa/sft loss masks: learn after the assistant's, stop at anyone else's."""
        return LossMarkers(learn=(self.prefix("assistant"),), stop=(self.prefix("user"), self.prefix("system")))

    def to_dict(self) -> dict[str, Any]:
        """JSON form, recorded in PREFIX.meta.json."""
        return {"user": self.user, "assistant": self.assistant, "system": self.system, "turn": self.turn,
                "sep": self.sep, "collapse_blank_lines": self.collapse_blank_lines}


@dataclass(frozen=True)
class SourceOptions:
    """How to read inputs: format, field names, chat template, text splitting and encoding, bad-record policy."""

    fmt: str = "auto"
    fields: tuple[str, ...] | None = None
    template: ChatTemplate = field(default_factory=ChatTemplate)
    text_docs: str = "blank"
    skip_invalid: bool = False
    encoding: str = "utf-8"


@dataclass
class Document:
    """One document's text and where it came from (file:line), for error messages."""

    text: str
    origin: str


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


class RecordReader:
    """What every document source shares: the options, bad-record policy, counters, record rendering.

    Subclasses (files here, Hugging Face datasets in `hf.py`) set `files`, `total_bytes` and iterate
    `Document`s; `prepare` and `open_documents` only use this interface.
    """

    def __init__(self, options: SourceOptions | None = None):
        self.options = options or SourceOptions()
        if self.options.fmt not in FORMATS:
            raise DataError(f"format {self.options.fmt!r} is not known", f"Use one of: {', '.join(FORMATS)}.")
        if self.options.text_docs not in ("blank", "file"):
            raise DataError(f"text split {self.options.text_docs!r} is not known", "Use 'blank' or 'file'.")
        if self.options.encoding not in ENCODINGS:
            raise DataError(f"text encoding {self.options.encoding!r} is not supported",
                            f"Use one of: {', '.join(ENCODINGS)} (or convert the file to UTF-8).")
        self.files: list[Path] = []
        self.total_bytes = 0
        self.bytes_read = 0
        self.skipped: list[str] = []
        self.empty = 0
        self.formats: dict[str, str] = {}

    def __iter__(self) -> Iterator[Document]:  # pragma: no cover - overridden
        raise NotImplementedError

    def _bad(self, origin: str, what: str) -> None:
        if not self.options.skip_invalid:
            raise DataError(f"{origin}: {what}", _SKIP_FIX)
        self.skipped.append(f"{origin}: {what}")

    def _keep(self, text: str, origin: str, utf8: bool = False) -> bool:
        """Whether `text` makes a document: not when blank (counted) or not valid UTF-8 (reported).
        `utf8`: known valid, e.g. decoded strictly from a text file, which refuses encoded surrogates."""
        if not text or text.isspace():
            self.empty += 1
            return False
        if not utf8:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as e:
                self._bad(origin, f"lone surrogate U+{ord(text[e.start]):04X} is not valid UTF-8")
                return False
        return True

    def _render(self, key: str, records: Iterable[tuple[str, dict[str, Any]]], fmt: str) -> Iterator[Document]:
        """Records (origin, dict) → documents in format `fmt` (auto: detected from the first record)."""
        render = None
        for origin, rec in records:
            if render is None:
                fmt, render = _renderer(fmt, rec, self.options, origin)
                self.formats[key] = fmt
            text = self._record_text(render, origin, rec)
            if text is not None:
                yield Document(text, origin)

    def _record_text(self, render: Callable[[dict[str, Any]], str], origin: str,
                     rec: dict[str, Any], utf8: bool = False) -> str | None:
        """The document text of a record, or None when it is bad (reported) or blank (counted)."""
        try:
            text = render(rec)
        except _BadRecord as e:
            self._bad(origin, str(e))
            return None
        return text if self._keep(text, origin, utf8) else None

    def _json_lines(self, name: str, lines: Iterable[bytes], first: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """Records of JSON lines numbered from `first` (blank lines skipped, bad ones reported)."""
        for no, raw in enumerate(lines, first):
            self.bytes_read += len(raw)
            if raw.isspace():
                continue
            origin = f"{name}:{no}"
            try:
                text = raw.decode("utf-8")
                rec = _loads(text)
            except UnicodeDecodeError as e:
                self._bad(origin, f"invalid UTF-8 (byte 0x{raw[e.start]:02x})")
                continue
            except json.JSONDecodeError as e:
                self._bad(origin, f"invalid JSON ({e.msg} at column {_column(text, e)})")
                continue
            if not isinstance(rec, dict):
                self._bad(origin, f"expected a JSON object, got {type(rec).__name__}")
                continue
            yield origin, rec

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


@dataclass(frozen=True)
class TextBatch:
    """Documents' texts read in order, with the records skipped and the empty documents met meanwhile."""

    texts: list[str]
    skipped: list[str]
    empty: int

    def parse(self) -> tuple[list[str], list[str], int]:
        """(texts, skipped records' messages, empty documents), as `LineChunk.parse`."""
        return self.texts, self.skipped, self.empty


@dataclass(frozen=True)
class LineChunk:
    """Whole lines (bytes `start` to `end`, line `first_line` on) of a JSON-lines file whose format and
    fields are settled (from its first record).

    Picklable: a worker process parses and renders it with the reader's own code, so documents,
    origins (`file:line`), skipped records and errors are exactly those of reading the file in order.
    `data` holds the bytes when the reader has them at hand; `without_data()` is the small copy to
    send to another process, which reads them from the file itself (no copy through a pipe).
    """

    name: str
    first_line: int
    start: int
    end: int
    fmt: str
    fields: tuple[str, ...]
    options: SourceOptions
    data: bytes | None = field(default=None, repr=False, compare=False)

    def without_data(self) -> LineChunk:
        """This chunk with its bytes left to be read from the file."""
        return replace(self, data=None)

    def parse(self, utf8: bool = False) -> tuple[list[str], list[str], int]:
        """The documents' texts, the skipped records' messages, and how many documents were empty.

        Raises the reader's DataError at the first bad record unless options.skip_invalid.
        `utf8`: skip the check for lone surrogates, for a caller whose next step refuses them anyway
        (the tokenizer) and then parses again without `utf8` to report them in order.
        """
        data = self.data
        if data is None:
            with open(self.name, "rb") as f:
                f.seek(self.start)
                data = f.read(self.end - self.start)
        reader = RecordReader(self.options)
        render = _make_renderer(self.fmt, self.fields, self.options.template)
        texts = []
        for origin, rec in reader._json_lines(self.name, io.BytesIO(data), self.first_line):
            text = reader._record_text(render, origin, rec, utf8)
            if text is not None:
                texts.append(text)
        return texts, reader.skipped, reader.empty


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
            for first_line, start, data in _line_blocks(path, limit):
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
                    return _resolve_format(self.options.fmt, rec, self.options, f"{path}:{no}") \
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
            yield from self._json_lines(str(path), f, 1)


class _BadRecord(Exception):
    pass


_DECODER = json.JSONDecoder()
_JSON_SPACE = " \t\n\r"


def _loads(text: str) -> Any:
    """`json.loads(text)`, without its Python-level steps for the usual line (a value then a newline);
    anything else goes to json.loads itself, which gives the same value or raises the same error."""
    try:
        value, end = _DECODER.raw_decode(text)
    except json.JSONDecodeError:
        return json.loads(text)
    if end != len(text) and text[end:].strip(_JSON_SPACE):
        return json.loads(text)
    return value


def _column(line: str, e: json.JSONDecodeError) -> int:
    """The column of a JSON error in one line: json counts the line's own newline as the start of a
    next line, and reports an error at the end of the line (a missing brace) as column 1 of that one."""
    return min(e.pos, len(line.rstrip("\r\n"))) + 1


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


def _get_str(rec: dict[str, Any], key: str, optional: bool = False) -> str:
    if key not in rec or rec[key] is None:
        if optional:
            return ""
        raise _BadRecord(f"field {key!r} is missing (keys: {', '.join(sorted(rec)) or 'none'})")
    value = rec[key]
    if not isinstance(value, str):
        raise _BadRecord(f"field {key!r} is a {type(value).__name__}, not a string")
    return value


def _renderer(fmt: str, first: dict[str, Any], options: SourceOptions,
              origin: str) -> tuple[str, Callable[[dict[str, Any]], str]]:
    """Pick the format and fields from the options or the first record; return (format, record → text)."""
    fmt, fields = _resolve_format(fmt, first, options, origin)
    return fmt, _make_renderer(fmt, fields, options.template)


def _resolve_format(fmt: str, first: dict[str, Any], options: SourceOptions, origin: str) -> tuple[str, tuple[str, ...]]:
    """The format and the fields it reads, from the options or else the first record."""
    fields = options.fields
    if fmt == "auto":
        fmt = _detect(first, fields, origin)
    if fmt == "jsonl":
        return fmt, (fields[0] if fields else "text",)
    if fmt == "chat":
        return fmt, (fields[0] if fields else next((k for k in CHAT_FIELDS if k in first), CHAT_FIELDS[0]),)
    if fmt == "sft":
        if fields is None:
            fields = next((f for f in SFT_FIELDS if f[0] in first and f[-1] in first), None)
            if fields is None:
                raise DataError(f"{origin}: no prompt/response fields among {sorted(first)}",
                                "Pass --fields PROMPT,RESPONSE (or INSTRUCTION,INPUT,OUTPUT).")
        if len(fields) not in (2, 3):
            raise DataError(f"--fields {','.join(fields)} has {len(fields)} names for sft",
                            "Give PROMPT,RESPONSE or INSTRUCTION,INPUT,OUTPUT.")
        return fmt, tuple(fields)
    raise DataError(f"format {fmt!r} cannot read JSON records ({origin})", "Use jsonl, sft or chat.")


def _make_renderer(fmt: str, fields: tuple[str, ...], template: ChatTemplate) -> Callable[[dict[str, Any]], str]:
    """record → text for a resolved format and its fields."""
    if fmt == "jsonl":
        key = fields[0]
        return lambda rec: _get_str(rec, key)
    if fmt == "chat":
        key = fields[0]
        return lambda rec: template.render(_chat_turns(rec, key))
    return lambda rec: template.render(_sft_turns(rec, fields))


def _line_blocks(path: Path, limit: int) -> Iterator[tuple[int, int, bytes]]:
    """(number of the first line, offset, bytes) of runs of whole lines of about `limit` bytes each;
    the last may lack its newline."""
    no, start, held = 1, 0, []
    with open(path, "rb") as f:
        while block := f.read(limit):
            cut = block.rfind(b"\n") + 1
            if not cut:  # a line longer than `limit` goes on into the next block
                held.append(block)
                continue
            data = b"".join([*held, block[:cut]]) if held else block[:cut]
            held = [block[cut:]] if cut < len(block) else []
            yield no, start, data
            no, start = no + block.count(b"\n"), start + len(data)
    if held:
        yield no, start, b"".join(held)


def _detect(rec: dict[str, Any], fields: tuple[str, ...] | None, origin: str) -> str:
    if fields:
        if len(fields) > 1:
            return "sft"
        return "chat" if isinstance(rec.get(fields[0]), list) else "jsonl"
    if "text" in rec:
        return "jsonl"
    if any(k in rec for k in CHAT_FIELDS):
        return "chat"
    if any(f[0] in rec and f[-1] in rec for f in SFT_FIELDS):
        return "sft"
    raise DataError(f"{origin}: cannot tell the data format from the keys {sorted(rec)}",
                    "Pass --format jsonl|sft|chat and --fields.")


def _sft_turns(rec: dict[str, Any], fields: tuple[str, ...]) -> list[tuple[str, str]]:
    if len(fields) == 3:
        prompt = _get_str(rec, fields[0])
        extra = _get_str(rec, fields[1], optional=True).strip()
        if extra:
            prompt = f"{prompt.strip()}\n{extra}"
    else:
        prompt = _get_str(rec, fields[0])
    return [("user", prompt), ("assistant", _get_str(rec, fields[-1]))]


def _chat_turns(rec: dict[str, Any], key: str) -> list[tuple[str, str]]:
    msgs = rec.get(key)
    if not isinstance(msgs, list) or not msgs:
        raise _BadRecord(f"field {key!r} is not a non-empty list of messages")
    turns = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise _BadRecord(f"message {i} is not an object")
        role_key, content_key = ("role", "content") if "role" in m else ("from", "value")
        role = ROLE_ALIASES.get(str(m.get(role_key, "")).lower())
        if role is None:
            raise _BadRecord(f"message {i} has unknown role {m.get(role_key)!r} (use user/assistant/system)")
        turns.append((role, _get_str(m, content_key)))
    return turns
