"""Loss masks on a small chat and an SFT example, with hand-checked per-token flags and targets."""

from __future__ import annotations

import numpy as np
import pytest

from rwkv_tune.data.masks import LossMarkers, loss_flags
from rwkv_tune.data.sampling import IGNORE, doc_sample
from rwkv_tune.data.tokenizer import get_tokenizer
from rwkv_tune.errors import ConfigError

# Turns of "User: Hi\n\nAssistant: Hello\n\nUser: Bye\n\nAssistant: Ok", as pieces that tokenize separately
# exactly as they do together (checked below), with 1 = the piece is learned under qa.
CHAT = [("User: Hi", 0), ("\n\n", 0), ("Assistant:", 0), (" Hello", 1), ("\n\n", 1), ("User: Bye", 0),
        ("\n\n", 0), ("Assistant:", 0), (" Ok", 1)]


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer()


def build(tok, pieces):
    ids, qa = [], []
    for text, learn in pieces:
        part = tok.encode(text)
        ids += part
        qa += [learn] * len(part)
    assert tok.encode("".join(t for t, _ in pieces)) == ids
    return np.array(ids + [0]), np.array(qa + [1], dtype=bool)


def test_qa_learns_every_assistant_turn_and_the_end_token(tok):
    ids, expected = build(tok, CHAT)
    flags = loss_flags(ids, "qa", tok)
    assert flags.tolist() == expected.tolist()
    assert tok.decode(ids[flags]) == " Hello\n\n Ok"


def test_sft_learns_only_the_last_response(tok):
    ids, _ = build(tok, CHAT)
    flags = loss_flags(ids, "sft", tok)
    n_ok = len(tok.encode(" Ok"))
    assert flags.tolist() == [False] * (len(ids) - n_ok - 1) + [True] * (n_ok + 1)


@pytest.mark.parametrize("kind", ["pad", "none"])
def test_pad_and_none_learn_every_token(tok, kind):
    ids, _ = build(tok, CHAT)
    assert loss_flags(ids, kind, tok).all()


def test_sft_targets_from_doc_sample(tok):
    pieces = [("User: What is 2+2?", 0), ("\n\n", 0), ("Assistant:", 0), (" 4", 1)]
    ids, learn = build(tok, pieces)
    x, y = doc_sample(ids, ctx_len=64, loss_mask="sft", tokenizer=tok)
    assert x.tolist() == ids[:-1].tolist()
    expected = np.where(learn[1:], ids[1:], IGNORE)
    assert y.tolist() == expected.tolist()
    assert y[-2:].tolist() == [tok.encode(" 4")[0], 0]
    assert (y[:-2] == IGNORE).all()


def test_marker_inside_a_line_is_not_a_turn(tok):
    ids = np.array(tok.encode("User: say Assistant: now\n\nAssistant: done") + [0])
    assert tok.decode(ids[loss_flags(ids, "qa", tok)]) == " done"


def test_no_marker_means_nothing_learned(tok):
    ids = np.array(tok.encode("just some text") + [0])
    assert not loss_flags(ids, "qa", tok).any()
    assert not loss_flags(ids, "sft", tok).any()


def test_custom_markers(tok):
    ids = np.array(tok.encode("Question: why\nAnswer: because\nQuestion: ok?\nAnswer: yes") + [0])
    markers = LossMarkers(learn=("Answer:",), stop=("Question:",))
    assert tok.decode(ids[loss_flags(ids, "qa", tok, markers)]) == " because\n yes"
    assert tok.decode(ids[loss_flags(ids, "sft", tok, markers)]) == " yes"


def test_unknown_mask_name(tok):
    with pytest.raises(ConfigError, match="loss_mask 'se'"):
        loss_flags(np.array([1, 2]), "se", tok)
