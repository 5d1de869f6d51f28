"""World tokenizer: known ids, round trips, and agreement with the `rwkv` package's TRIE tokenizer."""

from __future__ import annotations

import importlib.resources

import numpy as np
import pytest

from rwkv_tune.data.tokenizer import EOD, get_tokenizer
from rwkv_tune.errors import DataError

CORPUS = [
    "Hello world",
    "\n\n",
    "人工智能正在改变世界，语言模型可以写诗。日本語のテキスト。한국어 문장입니다.",
    "emoji 🙂🚀✨👍🏽 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵",
    "def f(x):\n    return {'a': [x ** 2 for _ in range(3)]}  # comment\n",
    "spaces      and\t\ttabs   \n\n\n\n   trailing    ",
    "Ünïcödé — “quotes” ‘single’ … ½ ∑∫√ ≠ ≤",
    "mixed123abcABC!!!???...",
    "\x00\x01 control \x7f chars",
    "a" * 300,
    "",
]


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer()


@pytest.fixture(scope="module")
def trie():
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

    return TRIE_TOKENIZER(str(importlib.resources.files("rwkv") / "rwkv_vocab_v20230424.txt"))


def test_known_ids(tok):
    assert tok.encode("Hello world") == [33155, 40213]
    assert tok.encode("\n\n") == [261]
    assert tok.encode("\n") == [11]
    assert tok.eod == EOD == 0
    assert tok.vocab_size == 65536


@pytest.mark.parametrize("text", CORPUS)
def test_round_trip(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_same_ids_as_trie_tokenizer(tok, trie):
    rng = np.random.default_rng(0)
    extra = ["".join(chr(c) for c in rng.integers(0x20, 0x2FFF, size=40) if not 0xD800 <= c <= 0xDFFF)
             for _ in range(30)]
    texts = CORPUS + extra
    assert tok.encode_batch(texts) == [trie.encode(t) for t in texts]
    for t in texts:
        assert tok.encode(t) == trie.encode(t)


def test_lone_surrogate_refused_like_trie(tok, trie):
    bad = "ok \ud800 broken"
    with pytest.raises(UnicodeEncodeError):
        trie.encode(bad)
    with pytest.raises(DataError, match="U\\+D800"):
        tok.encode(bad)
    with pytest.raises(DataError, match="surrogate"):
        tok.encode_batch(["fine", bad])


def test_decode_never_crashes_on_eod_and_partial_utf8(tok):
    ids = tok.encode("你")
    raw = tok.decode_bytes(ids)
    assert raw == "你".encode()
    partial = [raw[0] + 1]  # ids 1..256 are single bytes: id = byte + 1
    assert tok.decode_bytes(partial) == raw[:1]
    assert tok.decode(partial) == "\ufffd"
    assert tok.decode([0] + tok.encode("Hi") + [0]) == "Hi"
    with pytest.raises(DataError, match="70000"):
        tok.decode([70000])


def test_token_lengths_match_bytes(tok):
    lengths = tok.token_lengths
    assert lengths.shape == (65536,)
    assert lengths[0] == 0 and lengths[65535] == 0
    ids = tok.encode("The quick brown fox 你好 🙂")
    assert int(lengths[ids].sum()) == len("The quick brown fox 你好 🙂".encode())
