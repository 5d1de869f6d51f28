"""binidx: our writer read by an independent reader, hand-made int32/uint16 files read by ours, bad files refused."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from rwkv_tune.data.binidx import BinIdxWriter, Documents, read_binidx, write_binidx
from rwkv_tune.errors import DataError

DOCS = [[5, 6, 7, 0], [65529, 0], [1, 0], [300, 301, 302, 303, 0]]


def independent_read(prefix):
    """A reader written from the format description only (not using rwkv_tune)."""
    idx = open(f"{prefix}.idx", "rb").read()
    assert idx[:9] == b"MMIDIDX\x00\x00"
    (version,) = struct.unpack_from("<Q", idx, 9)
    code = idx[17]
    n, doc_count = struct.unpack_from("<QQ", idx, 18)
    sizes = struct.unpack_from(f"<{n}i", idx, 34)
    pointers = struct.unpack_from(f"<{n}q", idx, 34 + 4 * n)
    doc_idx = struct.unpack_from(f"<{doc_count}q", idx, 34 + 12 * n)
    assert len(idx) == 34 + 12 * n + 8 * doc_count
    fmt, width = {8: ("H", 2), 4: ("i", 4)}[code]
    data = open(f"{prefix}.bin", "rb").read()
    items = [list(struct.unpack_from(f"<{s}{fmt}", data, p)) for s, p in zip(sizes, pointers, strict=True)]
    return version, code, items, list(doc_idx), len(data) // width


def hand_write(prefix, docs, code, fmt):
    """Write a binidx by hand from the header spec, as another tool (json2binidx: int32) would."""
    width = struct.calcsize(f"<{fmt}")
    sizes = [len(d) for d in docs]
    pointers = np.concatenate([[0], np.cumsum(sizes)[:-1]]) * width
    with open(f"{prefix}.idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, code, len(docs), len(docs) + 1))
        f.write(struct.pack(f"<{len(docs)}i", *sizes))
        f.write(struct.pack(f"<{len(docs)}q", *pointers))
        f.write(struct.pack(f"<{len(docs) + 1}q", *range(len(docs) + 1)))
    with open(f"{prefix}.bin", "wb") as f:
        for d in docs:
            f.write(struct.pack(f"<{len(d)}{fmt}", *d))


def test_written_files_read_by_independent_reader(tmp_path):
    bin_path, idx_path = write_binidx(tmp_path / "d", DOCS)
    assert bin_path.name == "d.bin" and idx_path.name == "d.idx"
    version, code, items, doc_idx, n_tokens = independent_read(tmp_path / "d")
    assert (version, code) == (1, 8)
    assert items == DOCS
    assert doc_idx == [0, 1, 2, 3, 4]
    assert n_tokens == sum(map(len, DOCS))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(("code", "fmt", "dtype"), [(4, "i", np.int32), (8, "H", np.uint16), (1, "B", np.uint8)])
def test_reads_hand_written_files(tmp_path, code, fmt, dtype):
    docs = [[1, 2, 3], [200, 0], [7]]
    hand_write(tmp_path / "h", docs, code, fmt)
    d = read_binidx(tmp_path / "h")
    assert d.tokens.dtype == dtype
    assert isinstance(d.tokens, np.memmap)
    assert [list(d[i]) for i in range(len(d))] == docs
    assert d.num_tokens == 6
    assert list(d.sizes) == [3, 2, 1]
    assert list(d.tokens) == [1, 2, 3, 200, 0, 7]
    assert [list(x) for x in (read_binidx(tmp_path / "h.bin")[0], read_binidx(tmp_path / "h.idx")[0])] == [[1, 2, 3]] * 2


def test_int32_large_ids_round_trip(tmp_path):
    write_binidx(tmp_path / "w", [[70000, 1], [2]], dtype=np.int32)
    _, code, items, _, _ = independent_read(tmp_path / "w")
    assert code == 4 and items == [[70000, 1], [2]]
    assert list(read_binidx(tmp_path / "w")[0]) == [70000, 1]


def test_uint16_refuses_ids_that_do_not_fit(tmp_path):
    with pytest.raises(DataError, match="70000"):
        write_binidx(tmp_path / "x", [[1, 2], [70000]])
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), BinIdxWriter(tmp_path / "p") as w:
        w.add([1, 2, 0])
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_missing_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_binidx(tmp_path / "nothing")
    write_binidx(tmp_path / "d", DOCS)
    (tmp_path / "d.bin").unlink()
    with pytest.raises(DataError, match=r"d\.bin does not exist"):
        read_binidx(tmp_path / "d")


def test_wrong_magic_and_version(tmp_path):
    write_binidx(tmp_path / "d", DOCS)
    idx = bytearray((tmp_path / "d.idx").read_bytes())
    (tmp_path / "d.idx").write_bytes(b"NOTANIDX\x00" + idx[9:])
    with pytest.raises(DataError, match="magic"):
        read_binidx(tmp_path / "d")
    idx[9:17] = struct.pack("<Q", 2)
    (tmp_path / "d.idx").write_bytes(bytes(idx))
    with pytest.raises(DataError, match="version 2"):
        read_binidx(tmp_path / "d")


def test_bin_size_not_matching_idx(tmp_path):
    write_binidx(tmp_path / "d", DOCS)
    with open(tmp_path / "d.bin", "ab") as f:
        f.write(b"\x00\x00")
    with pytest.raises(DataError, match="do not belong together"):
        read_binidx(tmp_path / "d")
    (tmp_path / "d.bin").write_bytes((tmp_path / "d.bin").read_bytes()[:-6])
    with pytest.raises(DataError, match="bytes but"):
        read_binidx(tmp_path / "d")


def test_truncated_idx_and_float_dtype(tmp_path):
    write_binidx(tmp_path / "d", DOCS)
    idx = (tmp_path / "d.idx").read_bytes()
    (tmp_path / "d.idx").write_bytes(idx[:-8])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_binidx(tmp_path / "d")
    (tmp_path / "d.idx").write_bytes(idx[:17] + bytes([6]) + idx[18:])
    with pytest.raises(DataError, match="float"):
        read_binidx(tmp_path / "d")


def test_empty_dataset_refused(tmp_path):
    write_binidx(tmp_path / "e", [])
    with pytest.raises(DataError, match="empty"):
        read_binidx(tmp_path / "e")


def test_check_vocab_names_first_offending_position(tmp_path):
    write_binidx(tmp_path / "v", [[1, 2, 3], [4, 65000, 5, 65100]])
    d = read_binidx(tmp_path / "v")
    d.check_vocab(65536)
    with pytest.raises(DataError, match=r"65000 at position 4 \(document 1, offset 1\).*vocab of 50277"):
        d.check_vocab(50277)
    signed = Documents.from_lists([[1, -3]], dtype=np.int32)
    with pytest.raises(DataError, match="-3"):
        signed.check_vocab(65536)
