"""JSON records to document text: the jsonl / sft / chat formats, their fields, and RWKV's chat template.

SFT and chat records are rendered in RWKV's chat format (`User: …\\n\\nAssistant: …`) through one
`ChatTemplate`, which also yields the role markers the `qa`/`sft` loss masks look for. `RecordParser`
turns JSON lines into records and records into texts under the bad-record policy of `SourceOptions`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from rwkv_tune.data.masks import LossMarkers
from rwkv_tune.errors import DataError

FORMATS = ("auto", "jsonl", "sft", "chat", "text")
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
_SKIP_FIX = "Fix it, or pass --skip-invalid to skip bad records."


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


class BadRecord(Exception):
    """A record that cannot be rendered (missing field, wrong type, unknown role)."""


class RecordParser:
    """Records to document texts under the options' bad-record policy, counting what was skipped or empty.

    `LineChunk.parse` uses it on its own in a worker process; every reader builds on it.
    """

    def __init__(self, options: SourceOptions | None = None):
        self.options = options or SourceOptions()
        self.bytes_read = 0
        self.skipped: list[str] = []
        self.empty = 0

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

    def record_text(self, render: Callable[[dict[str, Any]], str], origin: str,
                    rec: dict[str, Any], utf8: bool = False) -> str | None:
        """The document text of a record, or None when it is bad (reported) or blank (counted)."""
        try:
            text = render(rec)
        except BadRecord as e:
            self._bad(origin, str(e))
            return None
        return text if self._keep(text, origin, utf8) else None

    def json_lines(self, name: str, lines: Iterable[bytes], first: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """Records of JSON lines numbered from `first` (blank lines skipped, bad ones reported)."""
        for no, raw in enumerate(lines, first):
            self.bytes_read += len(raw)
            if raw.isspace():
                continue
            origin = f"{name}:{no}"
            try:
                text = raw.decode("utf-8")
                rec = loads(text)
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


_DECODER = json.JSONDecoder()
_JSON_SPACE = " \t\n\r"


def loads(text: str) -> Any:
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


def _get_str(rec: dict[str, Any], key: str, optional: bool = False) -> str:
    if key not in rec or rec[key] is None:
        if optional:
            return ""
        raise BadRecord(f"field {key!r} is missing (keys: {', '.join(sorted(rec)) or 'none'})")
    value = rec[key]
    if not isinstance(value, str):
        raise BadRecord(f"field {key!r} is a {type(value).__name__}, not a string")
    return value


def renderer(fmt: str, first: dict[str, Any], options: SourceOptions,
             origin: str) -> tuple[str, Callable[[dict[str, Any]], str]]:
    """Pick the format and fields from the options or the first record; return (format, record → text)."""
    fmt, fields = resolve_format(fmt, first, options, origin)
    return fmt, make_renderer(fmt, fields, options.template)


def resolve_format(fmt: str, first: dict[str, Any], options: SourceOptions, origin: str) -> tuple[str, tuple[str, ...]]:
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


def make_renderer(fmt: str, fields: tuple[str, ...], template: ChatTemplate) -> Callable[[dict[str, Any]], str]:
    """record → text for a resolved format and its fields."""
    if fmt == "jsonl":
        key = fields[0]
        return lambda rec: _get_str(rec, key)
    if fmt == "chat":
        key = fields[0]
        return lambda rec: template.render(_chat_turns(rec, key))
    return lambda rec: template.render(_sft_turns(rec, fields))


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
        raise BadRecord(f"field {key!r} is not a non-empty list of messages")
    turns = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise BadRecord(f"message {i} is not an object")
        role_key, content_key = ("role", "content") if "role" in m else ("from", "value")
        role = ROLE_ALIASES.get(str(m.get(role_key, "")).lower())
        if role is None:
            raise BadRecord(f"message {i} has unknown role {m.get(role_key)!r} (use user/assistant/system)")
        turns.append((role, _get_str(m, content_key)))
    return turns
