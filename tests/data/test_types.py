"""The rest of RWKV's --data_type list: utf-8, utf-16le, numpy, uint16, dummy; routing and type detection.

Each type is checked against converting the same text or array by hand: tokenize the documents with
the World tokenizer (+ end token 0), or take the array's ids as they are.
"""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from rwkv_tune.cli import app
from rwkv_tune.data import IGNORE, make_batches, open_documents, read_binidx
from rwkv_tune.data.arrays import dummy_documents, load_numpy, parse_dummy
from rwkv_tune.data.binidx import read_meta
from rwkv_tune.data.detect import detect_data_type
from rwkv_tune.data.loader import resolve_type
from rwkv_tune.data.prepare import prepare
from rwkv_tune.data.readers import DocumentReader
from rwkv_tune.data.records import SourceOptions
from rwkv_tune.data.tokenizer import get_tokenizer
from rwkv_tune.errors import DataError

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# U+0A0A and U+010A have a 0x0A byte in their UTF-16LE form; they must not split lines.
DOCS = ["First paragraph\nwith two lines ਊ Ċ", "第二段 with emoji 🙂 and  runs   of spaces", "def f(x):\n    return x"]


def by_hand(docs):
    tok = get_tokenizer()
    return [tok.encode(d) + [0] for d in docs]


def doc_lists(docs):
    return [np.asarray(docs[i]).tolist() for i in range(len(docs))]


def run(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, ANSI.sub("", result.output)


# ---------------------------------------------------------------- utf-8 / utf-16le text


def test_utf8_type_reads_any_file_name_as_text(tmp_path):
    p = tmp_path / "corpus.dat"
    p.write_text("\n\n".join(DOCS) + "\n", encoding="utf-8")
    assert doc_lists(open_documents(p, type="utf-8")) == by_hand(DOCS)
    result = prepare([p], tmp_path / "u8", type="utf-8")
    assert doc_lists(read_binidx(tmp_path / "u8")) == by_hand(DOCS)
    assert result.formats == {str(p): "text"}


def test_utf16le_with_bom_and_crlf_gives_the_utf8_tokens(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_bytes(b"\xff\xfe" + ("\r\n\r\n".join(d.replace("\n", "\r\n") for d in DOCS) + "\r\n").encode("utf-16le"))
    assert doc_lists(open_documents(p, type="utf-16le")) == by_hand(DOCS)
    whole = [d.text for d in DocumentReader([p], SourceOptions(fmt="text", encoding="utf-16le", text_docs="file"))]
    assert whole == ["\n\n".join(DOCS)]
    prepare([p], tmp_path / "u16", type="utf-16le")
    assert doc_lists(read_binidx(tmp_path / "u16")) == by_hand(DOCS)
    assert detect_data_type(p) == "utf-16le"
    no_bom = tmp_path / "nobom.txt"
    no_bom.write_bytes("plain ascii text in utf-16".encode("utf-16le"))
    assert detect_data_type(no_bom) == "utf-16le"


def test_utf16le_invalid_code_unit_names_the_line_or_is_skipped(tmp_path):
    p = tmp_path / "bad16.txt"
    lone = b"\x00\xdc"  # a lone low surrogate
    p.write_bytes("good\n\n".encode("utf-16le") + b"b\x00a\x00" + lone + "d\nsame para\n\nfine\n".encode("utf-16le"))
    with pytest.raises(DataError, match=r"bad16\.txt:3: invalid UTF-16LE"):
        open_documents(p, type="utf-16le")
    reader = DocumentReader([p], SourceOptions(fmt="text", encoding="utf-16le", skip_invalid=True))
    assert [d.text for d in reader] == ["good", "fine"]
    odd = tmp_path / "odd.txt"
    odd.write_bytes("ok\n".encode("utf-16le") + b"x")
    with pytest.raises(DataError, match=r"odd\.txt:2: invalid UTF-16LE"):
        open_documents(odd, type="utf-16le")


def test_utf8_bom_is_not_a_token(tmp_path):
    p = tmp_path / "bom.txt"
    p.write_bytes(b"\xef\xbb\xbf" + "\n\n".join(DOCS).encode("utf-8"))
    assert doc_lists(open_documents(p, type="text")) == by_hand(DOCS)


# ---------------------------------------------------------------- numpy


def test_numpy_1d_stream_keeps_tokens_and_splits_documents_at_eod(tmp_path):
    stream = np.array([5, 6, 7, 0, 8, 9, 0, 10, 11, 12, 13], dtype=np.int32)
    np.save(tmp_path / "s.npy", stream)
    docs = open_documents(tmp_path / "s.npy")  # auto: .npy
    assert np.asarray(docs.tokens).tolist() == stream.tolist()
    assert doc_lists(docs) == [[5, 6, 7, 0], [8, 9, 0], [10, 11, 12, 13]]
    b = make_batches(tmp_path / "s.npy", type="numpy", mode="get", ctx_len=4, micro_bsz=1, full_coverage=False,
                     pad_multiple=1, vocab_size=100)
    x, y = next(b)
    start = next(i for i in range(len(stream) - 4) if stream[i:i + 4].tolist() == x[0].tolist())
    assert y[0].tolist() == stream[start + 1:start + 5].tolist()
    prepare([tmp_path / "s.npy"], tmp_path / "s", type="numpy")
    back = read_binidx(tmp_path / "s")
    assert back.tokens.dtype == np.uint16 and doc_lists(back) == doc_lists(docs)
    meta = read_meta(tmp_path / "s")
    assert meta["eod"] is False and meta["dtype"] == "uint16" and meta["source_formats"] == {str(tmp_path / "s.npy"): "numpy"}


def test_numpy_2d_rows_and_object_documents(tmp_path):
    rows = np.arange(1, 13, dtype=np.int64).reshape(3, 4)
    np.save(tmp_path / "rows.npy", rows)
    assert doc_lists(load_numpy(tmp_path / "rows.npy")) == rows.tolist()
    np.save(tmp_path / "f.npy", np.asfortranarray(rows))
    assert doc_lists(load_numpy(tmp_path / "f.npy")) == rows.tolist()
    ragged = np.empty(3, dtype=object)
    ragged[:] = [np.array([3, 4, 0]), [7, 8, 9, 10, 0], np.array([65535, 0], dtype=np.uint16)]
    np.save(tmp_path / "obj.npy", ragged, allow_pickle=True)
    docs = open_documents(tmp_path / "obj.npy", type="numpy")
    assert doc_lists(docs) == [[3, 4, 0], [7, 8, 9, 10, 0], [65535, 0]]
    prepare([tmp_path / "obj.npy"], tmp_path / "obj", type="numpy", shuffle=True, seed=1)
    assert sorted(doc_lists(read_binidx(tmp_path / "obj"))) == sorted(doc_lists(docs))


class _Planted:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_numpy_object_array_never_runs_pickled_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = np.empty(1, dtype=object)
    evil[0] = _Planted(str(marker))
    np.save(tmp_path / "evil.npy", evil, allow_pickle=True)
    with pytest.raises(DataError, match="cannot be read safely"):
        open_documents(tmp_path / "evil.npy", type="numpy")
    assert not marker.exists()
    with open(tmp_path / "evil.npy", "rb") as f:  # the file really would have run it
        f.read(10 + int.from_bytes(open(tmp_path / "evil.npy", "rb").read(10)[8:10], "little"))
        pickle.load(f)
    assert marker.exists()


@pytest.mark.parametrize(("array", "message"), [
    (np.array([1.0, 2.0]), "float64 values, not integer token ids"),
    (np.zeros((2, 2, 2), dtype=np.int32), "expected 1-D"),
    (np.zeros(0, dtype=np.int32), "empty array"),
])
def test_numpy_bad_arrays(tmp_path, array, message):
    np.save(tmp_path / "a.npy", array)
    with pytest.raises(DataError, match=re.escape(message)):
        open_documents(tmp_path / "a.npy", type="numpy")


def test_numpy_ids_checked_against_the_model_vocab_and_wide_ids_written_as_int32(tmp_path):
    np.save(tmp_path / "big.npy", np.array([1, 2, 0, 70000, 3, 0], dtype=np.int64))
    with pytest.raises(DataError, match=r"70000 at position 3 \(document 1, offset 0\)"):
        make_batches(tmp_path / "big.npy", type="numpy", mode="pad", ctx_len=4, micro_bsz=1, vocab_size=65536)
    prepare([tmp_path / "big.npy"], tmp_path / "big", type="numpy")
    back = read_binidx(tmp_path / "big")
    assert back.tokens.dtype == np.int32 and doc_lists(back) == [[1, 2, 0], [70000, 3, 0]]
    with pytest.raises(DataError, match="70000"):
        prepare([tmp_path / "big.npy"], tmp_path / "big2", type="numpy", vocab_size=65536)


# ---------------------------------------------------------------- uint16 raw


def test_uint16_raw_file(tmp_path):
    ids = np.array([300, 65535, 0, 7, 8, 0, 9], dtype="<u2")
    ids.tofile(tmp_path / "tokens.u16")
    docs = open_documents(tmp_path / "tokens.u16", type="uint16")
    assert np.asarray(docs.tokens).tolist() == ids.tolist()
    assert doc_lists(docs) == [[300, 65535, 0], [7, 8, 0], [9]]
    ids.tofile(tmp_path / "raw.bin")
    with pytest.raises(DataError, match=r"raw\.bin has no raw\.idx beside it.*data\.type: uint16"):
        open_documents(tmp_path / "raw.bin")
    assert detect_data_type(tmp_path / "raw.bin") == "uint16"
    prepare([tmp_path / "raw.bin"], tmp_path / "conv", type="uint16")
    assert np.asarray(read_binidx(tmp_path / "conv").tokens).tolist() == ids.tolist()
    (tmp_path / "odd.u16").write_bytes(b"\x01\x00\x02")
    with pytest.raises(DataError, match="odd number"):
        open_documents(tmp_path / "odd.u16", type="uint16")


# ---------------------------------------------------------------- dummy


def test_dummy_is_deterministic_for_a_seed_and_the_right_size():
    a = dummy_documents(10_000, doc_len=100, vocab_size=1000, seed=3)
    b = dummy_documents(10_000, doc_len=100, vocab_size=1000, seed=3)
    c = dummy_documents(10_000, doc_len=100, vocab_size=1000, seed=4)
    assert a.num_tokens == 10_000 and len(a) == 100 and set(a.sizes.tolist()) == {100}
    assert np.array_equal(a.tokens, b.tokens) and not np.array_equal(a.tokens, c.tokens)
    toks = np.asarray(a.tokens)
    assert toks.max() < 1000 and (toks[99::100] == 0).all() and (np.delete(toks, np.s_[99::100]) > 0).all()
    odd = dummy_documents(250, doc_len=100, vocab_size=50, seed=0)
    assert odd.sizes.tolist() == [100, 100, 50] and np.asarray(odd.tokens)[-1] == 0


def test_dummy_spec_and_make_batches_fill_every_row():
    assert parse_dummy("") == parse_dummy("dummy") == parse_dummy("dummy:1M")
    assert parse_dummy("dummy:200k,doc_len=512,seed=7") == parse_dummy("tokens=200k,doc_len=512,seed=7")
    assert parse_dummy("1.5k").tokens == 1500
    for bad in ("lots", "1M,size=3"):
        with pytest.raises(DataError, match="dummy data"):
            parse_dummy(bad)
    kw = dict(mode="pad", ctx_len=16, micro_bsz=4, vocab_size=300, seed=5)
    b = make_batches("", type="dummy", **kw)
    x, y = next(b)
    assert x.shape == (4, 16) and int(x.max()) < 300 and (y != IGNORE).all()
    x2, _ = next(make_batches("dummy:1M", **kw))  # auto recognises the name; same seed, same data
    assert x2.tolist() == x.tolist()
    x3, _ = next(make_batches("dummy:1M,seed=6", **kw))
    assert x3.tolist() != x.tolist()


# ---------------------------------------------------------------- routing, detection, CLI


def test_detect_data_type(tmp_path):
    (tmp_path / "t.jsonl").write_text(json.dumps({"text": "x"}) + "\n", encoding="utf-8")
    (tmp_path / "s.json").write_text(json.dumps([{"instruction": "i", "output": "o"}]), encoding="utf-8")
    (tmp_path / "c.jsonl").write_text(json.dumps({"messages": []}) + "\n", encoding="utf-8")
    (tmp_path / "p.txt").write_text("hello", encoding="utf-8")
    np.save(tmp_path / "a.npy", np.arange(3))
    prepare([tmp_path / "p.txt"], tmp_path / "bi")
    expected = {"t.jsonl": "jsonl", "s.json": "sft", "c.jsonl": "chat", "p.txt": "text", "a.npy": "numpy",
                "bi": "binidx", "bi.bin": "binidx", "missing.jsonl": "auto"}
    assert {k: detect_data_type(tmp_path / k) for k in expected} == expected
    assert detect_data_type("dummy:10k") == "dummy"
    assert detect_data_type("meta-math/MetaMathQA") == "auto"  # a hub id: the records decide


def test_resolve_type_routes_and_refuses_a_split_for_local_tokens(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(1, 4))
    assert resolve_type([tmp_path / "a.npy"], "auto") == "numpy"
    assert resolve_type(["meta-math/MetaMathQA"], "sft") == "hf"
    assert resolve_type([str(tmp_path / "x.jsonl")], "sft", "train[:10]") == "hf"
    assert resolve_type([str(tmp_path / "x.jsonl")], "sft") == "files"
    with pytest.raises(DataError, match="data.split 'train' applies to Hugging Face datasets only"):
        resolve_type([tmp_path / "a.npy"], "numpy", "train")
    with pytest.raises(DataError, match="format 'bogus' is not known"):
        resolve_type([tmp_path / "a.npy"], "bogus")


def test_cli_prepare_and_inspect_new_formats(tmp_path):
    np.save(tmp_path / "s.npy", np.array([5, 6, 0, 7, 8, 9, 0], dtype=np.int32))
    code, out = run("data", "prepare", tmp_path / "s.npy", "--format", "numpy", "-o", tmp_path / "n", "--json")
    assert code == 0, out
    info = json.loads(out)
    assert info["documents"] == 2 and info["tokens"] == 7
    code, out = run("data", "prepare", "dummy:5000,doc_len=100", "-o", tmp_path / "d", "--seed", "2", "--json")
    assert code == 0, out
    assert json.loads(out)["tokens"] == 5000
    assert np.array_equal(read_binidx(tmp_path / "d").tokens, dummy_documents(5000, doc_len=100, seed=2).tokens)
    p = tmp_path / "u.txt"
    p.write_bytes("\n\n".join(DOCS).encode("utf-16le"))
    code, out = run("data", "prepare", p, "--format", "utf-16le", "-o", tmp_path / "u", "--json")
    assert code == 0, out
    assert doc_lists(read_binidx(tmp_path / "u")) == by_hand(DOCS)
    code, out = run("data", "inspect", tmp_path / "s.npy", "--format", "numpy", "--json")
    assert code == 0, out
    assert json.loads(out)["documents"] == 2
    code, out = run("data", "prepare", tmp_path / "s.npy", "--split", "train", "-o", tmp_path / "x")
    lines = out.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "applies to Hugging Face datasets only" in lines[0]


def test_detect_module_is_torch_free():
    code = ("import sys; from rwkv_tune.data.detect import detect_data_type; "
            "print(any(m in sys.modules for m in ('torch', 'datasets', 'pyarrow', 'pyrwkv_tokenizer')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
