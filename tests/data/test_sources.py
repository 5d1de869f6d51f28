"""Source formats: jsonl text, SFT (query/response, alpaca), chat messages, plain text; detection and bad input."""

from __future__ import annotations

import json

import pytest

from rwkv_tune.data.prepare import prepare
from rwkv_tune.data.readers import DocumentReader
from rwkv_tune.data.records import ChatTemplate, SourceOptions
from rwkv_tune.errors import DataError


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def texts(paths, **kw):
    return [d.text for d in DocumentReader(paths, SourceOptions(**kw))]


def test_jsonl_text(tmp_path):
    p = write_jsonl(tmp_path / "a.jsonl", [{"text": "one", "meta": 1}, {"text": "two\n\nlines"}])
    reader = DocumentReader([p])
    docs = list(reader)
    assert [d.text for d in docs] == ["one", "two\n\nlines"]
    assert docs[1].origin == f"{p}:2"
    assert reader.formats == {str(p): "jsonl"}


def test_jsonl_custom_field_and_blank_lines_and_empty_docs(tmp_path):
    p = tmp_path / "b.jsonl"
    p.write_text('{"content": "x"}\n\n{"content": ""}\n{"content": "y"}\n', encoding="utf-8")
    reader = DocumentReader([p], SourceOptions(fmt="jsonl", fields=("content",)))
    assert [d.text for d in reader] == ["x", "y"]
    assert reader.empty == 1


def test_sft_query_response(tmp_path):
    p = write_jsonl(tmp_path / "s.jsonl", [{"query": "What is 2+2?", "response": "4"}])
    assert texts([p]) == ["User: What is 2+2?\n\nAssistant: 4"]


def test_sft_alpaca_with_and_without_input(tmp_path):
    p = write_jsonl(tmp_path / "al.jsonl", [
        {"instruction": "Translate", "input": "bonjour", "output": "hello"},
        {"instruction": "Say hi", "input": "", "output": "hi"},
    ])
    reader = DocumentReader([p])
    assert [d.text for d in reader] == ["User: Translate\nbonjour\n\nAssistant: hello", "User: Say hi\n\nAssistant: hi"]
    assert reader.formats[str(p)] == "sft"


def test_sft_explicit_fields(tmp_path):
    p = write_jsonl(tmp_path / "q.jsonl", [{"q": "Why?", "a": "Because.", "text": "ignored"}])
    assert texts([p], fmt="sft", fields=("q", "a")) == ["User: Why?\n\nAssistant: Because."]


def test_chat_messages_and_sharegpt(tmp_path):
    p = write_jsonl(tmp_path / "c.jsonl", [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi\n\n\nthere "},
                      {"role": "assistant", "content": "Hello."}]},
    ])
    q = write_jsonl(tmp_path / "g.jsonl", [
        {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]},
    ])
    assert texts([p, q]) == ["System: Be brief.\n\nUser: Hi\nthere\n\nAssistant: Hello.", "User: Q\n\nAssistant: A"]


def test_chat_template_configurable(tmp_path):
    p = write_jsonl(tmp_path / "c.jsonl", [{"messages": [{"role": "user", "content": "Q"},
                                                         {"role": "assistant", "content": "A"}]}])
    tpl = ChatTemplate(user="Question", assistant="Answer", turn="<{role}> {content}", sep="\n")
    assert texts([p], template=tpl) == ["<Question> Q\n<Answer> A"]
    assert tpl.markers().learn == ("<Answer>",)
    assert tpl.markers().stop == ("<Question>", "<System>")


def test_json_array_file(tmp_path):
    p = tmp_path / "arr.json"
    p.write_text(json.dumps([{"prompt": "P", "completion": "C"}, {"prompt": "P2", "completion": "C2"}]), encoding="utf-8")
    docs = list(DocumentReader([p]))
    assert [d.text for d in docs] == ["User: P\n\nAssistant: C", "User: P2\n\nAssistant: C2"]
    assert docs[1].origin == f"{p}[1]"


def test_text_blank_line_separated_and_one_per_file(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes(b"first para\nline two\n\n\n  \nsecond\r\n\r\nthird\n")
    assert texts([p]) == ["first para\nline two", "second", "third"]
    assert texts([p], text_docs="file") == ["first para\nline two\n\n\n  \nsecond\n\nthird"]


def test_folder_input_expands_sorted(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.txt").write_text("B", encoding="utf-8")
    write_jsonl(tmp_path / "d" / "a.jsonl", [{"text": "A"}])
    (tmp_path / "d" / "skip.bin").write_bytes(b"\x00")
    assert texts([tmp_path / "d"]) == ["A", "B"]


def test_missing_input(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        DocumentReader([tmp_path / "nope.jsonl"])


def test_invalid_json_line_fails_with_file_and_line_or_is_skipped(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "ok"}\n{"text": broken}\n{"text": "also ok"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: invalid JSON"):
        texts([p])
    reader = DocumentReader([p], SourceOptions(skip_invalid=True))
    assert [d.text for d in reader] == ["ok", "also ok"]
    assert len(reader.skipped) == 1 and "bad.jsonl:2" in reader.skipped[0]


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("bad_line, column", [
    ('{"text": "' + "x" * 38 + '"', 50),  # closing brace missing: the error is at the end of the line
    ('{"text": "ok", "n": [1, 2,, 3]}', 27),
])
def test_invalid_json_names_the_column_of_the_error_in_its_line(tmp_path, newline, bad_line, column):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(("".join(f'{{"text": "doc {i}"}}{newline}' for i in range(5)) + bad_line + newline).encode())
    with pytest.raises(DataError, match=rf"bad\.jsonl:6: invalid JSON \(.* at column {column}\)"):
        texts([p])
    with pytest.raises(DataError, match=rf"bad\.jsonl:6: invalid JSON \(.* at column {column}\)"):
        prepare([p], tmp_path / "out", workers=0)  # the same reader code, on a LineChunk


def test_invalid_utf8_and_lone_surrogate(tmp_path):
    p = tmp_path / "u.jsonl"
    p.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"u\.jsonl:2: invalid UTF-8 \(byte 0xe9\)"):
        texts([p])
    s = tmp_path / "s.jsonl"
    s.write_text('{"text": "a \\ud800 b"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"s\.jsonl:1: lone surrogate U\+D800"):
        texts([s])
    t = tmp_path / "t.txt"
    t.write_bytes(b"good\n\nbad \xff here\nsame para\n\nfine\n")
    with pytest.raises(DataError, match=r"t\.txt:3: invalid UTF-8"):
        texts([t])
    assert texts([t], skip_invalid=True) == ["good", "fine"]


def test_missing_field_and_unknown_role(tmp_path):
    p = write_jsonl(tmp_path / "m.jsonl", [{"text": "a"}, {"body": "b"}])
    with pytest.raises(DataError, match=r"m\.jsonl:2: field 'text' is missing \(keys: body\)"):
        texts([p])
    c = write_jsonl(tmp_path / "r.jsonl", [{"messages": [{"role": "wizard", "content": "x"}]}])
    with pytest.raises(DataError, match="unknown role 'wizard'"):
        texts([c])


def test_undetectable_format(tmp_path):
    p = write_jsonl(tmp_path / "x.jsonl", [{"foo": 1, "bar": 2}])
    with pytest.raises(DataError, match=r"cannot tell the data format from the keys \['bar', 'foo'\]"):
        texts([p])
    with pytest.raises(DataError, match="format 'csv' is not known"):
        DocumentReader([p], SourceOptions(fmt="csv"))
