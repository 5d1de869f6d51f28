"""Stats numbers, and the trainer-facing make_batches on binidx and raw files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rwkv_tune.data import IGNORE, data_stats, make_batches, open_documents, write_binidx
from rwkv_tune.data.prepare import prepare
from rwkv_tune.data.tokenizer import get_tokenizer
from rwkv_tune.errors import DataError


def test_stats_numbers():
    s = data_stats(np.array([4, 3, 2, 6, 1]), ctx_len=3, micro_bsz=2)
    assert s["documents"] == 5 and s["tokens"] == 16
    assert s["length"] == {"min": 1, "mean": 3.2, "p50": 3, "p90": 6, "p99": 6, "max": 6}
    assert s["over_ctx_len"] == 1 and s["over_ctx_len_tokens_lost"] == 2
    assert s["epoch_steps"] == 2  # 4 usable documents (>= 2 tokens) at micro_bsz 2
    assert s["get"]["magic_prime"] == 2  # floor(16/3) - 1 = 4 -> 2
    assert s["get"]["epoch_steps"] == 1
    assert "--magic_prime 2" in s["get"]["rwkv_lm_flags"]
    assert "over_ctx_len" not in data_stats(np.array([4, 3]))


def test_make_batches_from_binidx_checks_vocab(tmp_path):
    write_binidx(tmp_path / "d", [[1, 2, 0], [60000, 3, 0]])
    with pytest.raises(DataError, match="60000 at position 3 \\(document 1, offset 0\\)"):
        make_batches(tmp_path / "d", mode="pad", ctx_len=4, micro_bsz=1, vocab_size=50000)
    b = make_batches(tmp_path / "d", mode="pad", ctx_len=4, micro_bsz=2, vocab_size=65536, shuffle=False,
                     pad_multiple=1)
    x, y = next(b)
    assert x.tolist() == [[1, 2, 0, 0], [60000, 3, 0, 0]]
    assert y.tolist() == [[2, 0, IGNORE, IGNORE], [3, 0, IGNORE, IGNORE]]


def test_make_batches_from_raw_jsonl_with_sft_mask(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text(json.dumps({"query": "Hi?", "response": "Yes."}) + "\n", encoding="utf-8")
    b = make_batches(p, mode="pad", ctx_len=32, micro_bsz=1, loss_mask="sft")
    x, y = next(b)
    tok = get_tokenizer()
    learned = y[y != IGNORE].tolist()
    assert tok.decode(learned) == " Yes." and learned[-1] == 0
    assert tok.decode([t for t in x[0].tolist() if t]) == "User: Hi?\n\nAssistant: Yes."


def test_markers_come_from_prepare_metadata(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text(json.dumps({"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]})
                 + "\n", encoding="utf-8")
    from rwkv_tune.data.records import ChatTemplate, SourceOptions

    prepare([p], tmp_path / "c", options=SourceOptions(template=ChatTemplate(user="Human", assistant="Bot")))
    b = make_batches(tmp_path / "c", mode="pad", ctx_len=32, micro_bsz=1, loss_mask="qa")
    _, y = next(b)
    assert get_tokenizer().decode(y[y != IGNORE].tolist()) == " A"


def test_open_documents_missing(tmp_path):
    with pytest.raises(DataError, match="not found"):
        open_documents(tmp_path / "nothing")
