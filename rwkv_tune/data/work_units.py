"""`data prepare`'s units of work: `TextBatch` (texts already read) and `LineChunk` (JSON-lines bytes).

A reader's `units` hands its documents out as these; any process can parse a unit and get exactly the
documents, skipped records and errors of reading the file in order.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from rwkv_tune.data.records import RecordParser, SourceOptions, make_renderer


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
        parser = RecordParser(self.options)
        render = make_renderer(self.fmt, self.fields, self.options.template)
        texts = []
        for origin, rec in parser.json_lines(self.name, io.BytesIO(data), self.first_line):
            text = parser.record_text(render, origin, rec, utf8)
            if text is not None:
                texts.append(text)
        return texts, parser.skipped, parser.empty


Unit = TextBatch | LineChunk


def line_blocks(path: Path, limit: int) -> Iterator[tuple[int, int, bytes]]:
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
