"""The fast `data prepare` path: packed encoding, forked workers writing the very same files, the bench."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import rwkv_tune.data.prepare as prep
from rwkv_tune.data import read_binidx
from rwkv_tune.data.readers import DocumentReader
from rwkv_tune.data.records import SourceOptions
from rwkv_tune.data.tokenizer import get_tokenizer
from rwkv_tune.errors import DataError

fork_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers are forked on Linux only")


def _line(rec) -> str:
    return json.dumps(rec, ensure_ascii=False) + "\n"


@pytest.fixture
def inputs(tmp_path):
    """Files of every kind, with the bad and odd records a reader has to get right, in a folder."""
    d = tmp_path / "in"
    d.mkdir()
    long = "长文本 long line " * 400  # spans many read blocks once they are made small
    (d / "a.jsonl").write_bytes("".join([
        _line({"text": "Hello world"}), "\n", "not json\n", _line([1, 2]), _line({"text": ""}),
        _line({"text": "  \n\t "}), '{"text": "bad \\ud800 surrogate"}\n', _line({"text": long}),
        '{"text": "crlf line"}\r\n', _line({"other": "no text field"}), _line({"text": "🙂 emoji ✨"}),
    ]).encode("utf-8") + b'{"text": "\xff invalid utf-8"}\n' + _line({"text": "tail, no newline"}).rstrip().encode())
    (d / "b.txt").write_text("First paragraph.\nSame one.\n\n\nSecond paragraph 人工智能\n", encoding="utf-8")
    (d / "c.json").write_text(json.dumps([{"text": "array one"}, "not an object", {"text": "array two"}]),
                              encoding="utf-8")
    (d / "d.jsonl").write_text("".join(_line(r) for r in [
        {"instruction": "Translate", "input": "bonjour", "output": "hello"},
        {"instruction": "Say hi", "output": "hi"},
        {"instruction": "No output"},
    ]), encoding="utf-8")
    (d / "e.jsonl").write_text("".join(_line(r) for r in [
        {"messages": [{"role": "user", "content": "Hi\n\n\nthere"}, {"role": "assistant", "content": "Hello!"}]},
        {"messages": [{"role": "robot", "content": "?"}]},
    ]), encoding="utf-8")
    (d / "f.jsonl").write_text("\n\nnot json first\n" + _line({"text": "after a bad first line"}), encoding="utf-8")
    return d


def _expected_tokens(reader_docs) -> np.ndarray:
    tok = get_tokenizer()
    return np.concatenate([np.array(tok.encode(t) + [0], dtype=np.uint16) for t in reader_docs])


def test_encode_packed_matches_encode_batch():
    tok = get_tokenizer()
    texts = ["Hello world", "", "人工智能 🙂\n\n  code()  ", "a" * 300]
    ids = tok.encode_batch(texts)
    flat, sizes = tok.encode_packed(texts)
    assert sizes == [len(i) + 1 for i in ids]
    assert np.frombuffer(flat, dtype="<u2").tolist() == [t for i in ids for t in [*i, 0]]
    flat, sizes = tok.encode_packed(texts, eod=False)
    assert (np.frombuffer(flat, dtype="<u2").tolist(), sizes) == ([t for i in ids for t in i], [len(i) for i in ids])
    with pytest.raises(DataError, match="U\\+D800"):
        tok.encode_packed(["fine", "bad \ud800"])


@fork_only
@pytest.mark.parametrize("limit", [64, 1 << 18])
def test_workers_write_the_same_files_as_reading_in_order(inputs, tmp_path, monkeypatch, limit):
    monkeypatch.setattr(prep, "BATCH_CHARS", limit)
    opts = SourceOptions(skip_invalid=True)
    serial = DocumentReader([inputs], opts)
    docs = [d.text for d in serial]
    results = {w: prep.prepare([inputs], tmp_path / f"w{w}", options=opts, workers=w) for w in (0, 2)}
    for w, r in results.items():
        got = read_binidx(tmp_path / f"w{w}")
        assert np.array_equal(np.asarray(got.tokens), _expected_tokens(docs)), w
        assert len(got) == len(docs)
        assert (r.skipped, r.empty, r.formats, r.text_bytes) == (serial.skipped, serial.empty, serial.formats,
                                                                 serial.bytes_read), w
    for ext in ("bin", "idx"):
        assert (tmp_path / f"w0.{ext}").read_bytes() == (tmp_path / f"w2.{ext}").read_bytes()
    assert results[0].stats == results[2].stats
    assert any("a.jsonl:3: invalid JSON" in s for s in serial.skipped)
    assert any("a.jsonl:7: lone surrogate U+D800" in s for s in serial.skipped)
    assert any("a.jsonl:12: invalid UTF-8" in s for s in serial.skipped)
    assert "tail, no newline" in docs and "crlf line" in docs


@fork_only
def test_worker_errors_are_the_first_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(prep, "BATCH_CHARS", 64)
    good = "".join(_line({"text": f"document {i}"}) for i in range(20))
    (tmp_path / "a.jsonl").write_text(good + "oops\n" + good, encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(_line({"neither": "text nor messages"}), encoding="utf-8")
    for w in (0, 2):
        with pytest.raises(DataError, match=r"a\.jsonl:21: invalid JSON"):
            prep.prepare([tmp_path / "a.jsonl", tmp_path / "b.jsonl"], tmp_path / f"o{w}", workers=w)
        assert not (tmp_path / f"o{w}.bin").exists()


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=fork_only)])
def test_a_lone_surrogate_is_reported_before_a_later_bad_line(tmp_path, workers):
    p = tmp_path / "s.jsonl"
    p.write_text(_line({"text": "fine"}) + '{"text": "bad \\ud800"}\n' + "not json\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"s\.jsonl:2: lone surrogate U\+D800"):
        prep.prepare([p], tmp_path / "o", workers=workers)
    r = prep.prepare([p], tmp_path / "o", options=SourceOptions(skip_invalid=True), workers=workers)
    assert [s.split(": ", 1)[1] for s in r.skipped] == ["lone surrogate U+D800 is not valid UTF-8",
                                                       "invalid JSON (Expecting value at column 1)"]
    assert r.stats["documents"] == 1


@pytest.mark.parametrize("line", ['{"a": 1}\n', ' {"a": 1}\n', '{"a": 1}\r\n', '{"a": 1}', '{"a": 1} x\n',
                                  '{"a": 1}\u3000\n', '{"a": 1}\x0b\n', "nope\n", "\ufeff{}\n", "[1, 2]\n",
                                  '"s"\n', '{"a": NaN}\n', "{}{}\n", ""])
def test_json_lines_parse_exactly_as_json_loads(line):
    from rwkv_tune.data.records import loads

    def outcome(fn):
        try:
            return "ok", repr(fn(line))
        except json.JSONDecodeError as e:
            return "error", e.msg, e.colno

    assert outcome(loads) == outcome(json.loads)


def _die(unit, eod):
    os._exit(3)


@fork_only
def test_a_killed_worker_falls_back_to_this_process(inputs, tmp_path, monkeypatch):
    opts = SourceOptions(skip_invalid=True)
    prep.prepare([inputs], tmp_path / "ref", options=opts, workers=0)
    monkeypatch.setattr(prep, "_encode_in_worker", _die)
    prep.prepare([inputs], tmp_path / "fb", options=opts, workers=2)
    for ext in ("bin", "idx"):
        assert (tmp_path / f"ref.{ext}").read_bytes() == (tmp_path / f"fb.{ext}").read_bytes()


@fork_only
def test_workers_forked_after_the_rust_thread_pool_ran_do_not_hang(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(_line({"text": f"document {i} 人工智能"}) for i in range(2000)), encoding="utf-8")
    script = textwrap.dedent(f"""
        from rwkv_tune.data.prepare import prepare
        from rwkv_tune.data.tokenizer import get_tokenizer
        get_tokenizer().encode_batch(["starts the Rust thread pool"] * 64)
        print(prepare([{str(corpus)!r}], {str(tmp_path / "out")!r}, workers=2).stats["documents"])
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2000"


def test_small_inputs_stay_in_this_process():
    assert prep.pool_workers(1000) == 0
    big = prep.pool_workers(prep.POOL_MIN_BYTES)
    assert 0 <= big <= prep.MAX_WORKERS
    if not sys.platform.startswith("linux"):
        assert big == 0


def test_bench_prints_both_speeds_and_the_ratio(capsys):
    from rwkv_tune.data.bench import main

    main(["--mb", "0.3", "--trie-mb", "0.03", "--repeat", "1", "--workers", "0"])
    out = capsys.readouterr().out
    assert "rwkv-tune data prepare, end to end" in out
    assert "rwkv TRIE_TOKENIZER alone" in out
    assert "speed-up over TRIE (median of the runs' ratios): prepare end to end" in out
