"""Safe loading of untrusted model files and atomic writes."""

import os
import pickle

import pytest
import torch

from rwkv_tune.checkpoint import atomic_path, load_state_dict, read_shapes, save_state_dict
from rwkv_tune.errors import ModelFileError
from rwkv_tune.testing import make_state_dict


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = str(tmp_path / "pwned")
    path = tmp_path / "evil.pth"
    torch.save({"emb.weight": torch.zeros(2), "payload": _RunsCode(marker)}, path)
    with pytest.raises(ModelFileError, match="refused for safety"):
        load_state_dict(path)
    assert not os.path.exists(marker)

    raw = tmp_path / "evil_raw.pth"
    raw.write_bytes(pickle.dumps({"x": _RunsCode(marker)}))
    with pytest.raises(ModelFileError, match="refused for safety"):
        load_state_dict(raw)
    assert not os.path.exists(marker)


def test_empty_truncated_and_garbage_files(tmp_path):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty"):
        load_state_dict(empty)
    good = save_state_dict(make_state_dict(7, 1, 64), tmp_path / "good.pth")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        load_state_dict(truncated)
    garbage = tmp_path / "notes.pth"
    garbage.write_text("hello")
    with pytest.raises(ModelFileError, match="unknown format"):
        load_state_dict(garbage)
    with pytest.raises(ModelFileError, match="does not exist"):
        load_state_dict(tmp_path / "missing.pth")


def test_not_a_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ModelFileError, match="not a dict of tensors"):
        load_state_dict(path)


def test_safetensors_round_trip_and_header_shapes(tmp_path):
    sd = make_state_dict(6, 1, 64, dtype=torch.bfloat16)
    path = save_state_dict(sd, tmp_path / "m.safetensors", metadata={"format": "pt"})
    loaded = load_state_dict(path)
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)
    shapes, dtypes = read_shapes(path)
    assert shapes["blocks.0.att.time_maa_w2"] == tuple(sd["blocks.0.att.time_maa_w2"].shape)
    assert set(dtypes.values()) == {"bfloat16"}


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.pth"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.pth"]


def test_fingerprint_changes_with_content_and_handles_prefixes_and_folders(tmp_path):
    from rwkv_tune.checkpoint import fingerprint

    (tmp_path / "d.bin").write_bytes(b"a" * 100)
    (tmp_path / "d.idx").write_bytes(b"b" * 10)
    first = fingerprint(tmp_path / "d")  # a binidx prefix: both files
    assert first["size"] == 110
    (tmp_path / "d.bin").write_bytes(b"c" * 100)
    assert fingerprint(tmp_path / "d")["sha256_head_tail"] != first["sha256_head_tail"]
    folder = fingerprint(tmp_path)
    assert folder["size"] == 110 and fingerprint(tmp_path / "nothing-here")["missing"]
