"""Sampling modes on hand-checked corpora; determinism, coverage, magic prime, sharding, exact resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rwkv_tune.data.binidx import Documents
from rwkv_tune.data.sampling import IGNORE, Batches, is_prime, magic_prime
from rwkv_tune.errors import ConfigError, DataError

N = IGNORE
CORPUS = [[1, 2, 3, 0], [4, 5, 0], [6, 0], [7, 8, 9, 10, 11, 0]]


def docs(corpus=CORPUS):
    return Documents.from_lists(corpus)


def many(n=10, seed=0):
    rng = np.random.default_rng(seed)
    return Documents.from_lists([list(rng.integers(1, 1000, size=rng.integers(2, 9))) + [0] for _ in range(n)])


def rows(b):
    return b.x.tolist(), b.y.tolist()


def test_pad_mode_exact_arrays():
    b = Batches(docs(), mode="pad", ctx_len=4, micro_bsz=2, shuffle=False, pad_multiple=1)
    assert b.epoch_steps == 2
    first = next(b)
    assert first.x.dtype == torch.long and first.y.dtype == torch.long
    assert rows(first) == ([[1, 2, 3, 0], [4, 5, 0, 0]], [[2, 3, 0, N], [5, 0, N, N]])
    assert rows(next(b)) == ([[6, 0, 0, 0], [7, 8, 9, 10]], [[0, N, N, N], [8, 9, 10, 11]])
    assert rows(next(b)) == ([[1, 2, 3, 0], [4, 5, 0, 0]], [[2, 3, 0, N], [5, 0, N, N]])
    assert b.epoch == 1


def test_pad_mode_aligns_to_16_and_masks_the_alignment():
    b = Batches(docs(), mode="pad", ctx_len=20, micro_bsz=1, shuffle=False)
    x, y = next(b)
    assert x.shape == y.shape == (1, 32)
    assert x[0, :3].tolist() == [1, 2, 3] and (x[0, 3:] == 0).all()
    assert y[0, :3].tolist() == [2, 3, 0] and (y[0, 3:] == N).all()


def test_none_mask_learns_padding_but_not_alignment():
    b = Batches(docs(), mode="pad", ctx_len=4, micro_bsz=2, shuffle=False, pad_multiple=8, loss_mask="none")
    _, y = next(b)
    assert y.tolist() == [[2, 3, 0, 0, N, N, N, N], [5, 0, 0, 0, N, N, N, N]]


def test_only_mode_exact_arrays_and_truncation():
    b = Batches(docs(), mode="only", ctx_len=4, micro_bsz=1, shuffle=False, pad_multiple=1)
    got = [rows(next(b)) for _ in range(4)]
    assert got == [([[1, 2, 3]], [[2, 3, 0]]), ([[4, 5]], [[5, 0]]), ([[6]], [[0]]),
                   ([[7, 8, 9, 10]], [[8, 9, 10, 11]])]
    assert b.report()["truncated"] == 1
    assert "1 of 4 documents are longer than ctx_len+1 = 5" in b.warnings()[0]
    b16 = Batches(docs(), mode="only", ctx_len=4, micro_bsz=1, shuffle=False)
    x, y = next(b16)
    assert x.shape == (1, 16) and y[0, :3].tolist() == [2, 3, 0] and (y[0, 3:] == N).all()


def test_only_mode_needs_micro_bsz_1():
    with pytest.raises(ConfigError, match="micro_bsz 1"):
        Batches(docs(), mode="only", ctx_len=4, micro_bsz=2)


def test_too_short_documents_are_skipped_and_reported():
    b = Batches(Documents.from_lists([[1, 0], [0], [2, 3, 0]]), mode="pad", ctx_len=4, micro_bsz=1, shuffle=False)
    assert b.epoch_samples == 2
    assert [int(b.indices(s)[0]) for s in range(2)] == [0, 2]
    assert any("fewer than 2 tokens" in w for w in b.warnings())
    with pytest.raises(DataError, match="no document with 2 or more tokens"):
        Batches(Documents.from_lists([[0], [0]]), mode="pad", ctx_len=4, micro_bsz=1)


def test_pad_mode_uses_every_document_once_per_epoch_over_several_epochs():
    d = many(10)
    b = Batches(d, mode="pad", ctx_len=8, micro_bsz=3, seed=1)
    assert b.epoch_steps == 4
    seen = np.concatenate([b.indices(s) for s in range(10)])  # 30 samples = 3 epochs exactly
    for e in range(3):
        assert sorted(seen[10 * e:10 * e + 10].tolist()) == list(range(10))
    assert seen[:10].tolist() != seen[10:20].tolist()  # reshuffled per epoch
    assert seen[:10].tolist() != list(range(10))


def test_seed_determinism():
    a = Batches(many(), mode="pad", ctx_len=8, micro_bsz=2, seed=7)
    b = Batches(many(), mode="pad", ctx_len=8, micro_bsz=2, seed=7)
    c = Batches(many(), mode="pad", ctx_len=8, micro_bsz=2, seed=8)
    ra = [rows(next(a)) for _ in range(6)]
    assert ra == [rows(next(b)) for _ in range(6)]
    assert ra != [rows(next(c)) for _ in range(6)]


def test_rank_shards_are_disjoint_and_cover_the_epoch():
    d = many(12)
    r0 = Batches(d, mode="pad", ctx_len=8, micro_bsz=2, rank=0, world_size=3, seed=3)
    r1 = Batches(d, mode="pad", ctx_len=8, micro_bsz=2, rank=1, world_size=3, seed=3)
    r2 = Batches(d, mode="pad", ctx_len=8, micro_bsz=2, rank=2, world_size=3, seed=3)
    assert r0.epoch_steps == 2
    parts = [set(np.concatenate([r.indices(s) for s in range(2)]).tolist()) for r in (r0, r1, r2)]
    assert all(not (parts[i] & parts[j]) for i in range(3) for j in range(i + 1, 3))
    assert set.union(*parts) == set(range(12))
    with pytest.raises(ConfigError, match="rank 3"):
        Batches(d, mode="pad", ctx_len=8, micro_bsz=2, rank=3, world_size=3)


@pytest.mark.parametrize("mode", ["pad", "get"])
def test_resume_gives_identical_continuation(mode):
    d = many(40)
    kw = dict(mode=mode, ctx_len=4, micro_bsz=2, seed=5)
    a = Batches(d, **kw)
    for _ in range(7):
        next(a)
    state = a.state_dict()
    expected = [rows(next(a)) for _ in range(5)]
    b = Batches(d, **kw)
    b.load_state_dict(dict(state))
    assert b.step == 7
    assert [rows(next(b)) for _ in range(5)] == expected


def test_resume_with_another_world_size_continues_the_same_stream():
    d = many(20)
    two = [Batches(d, mode="pad", ctx_len=8, micro_bsz=2, rank=r, world_size=2, seed=2) for r in (0, 1)]
    for _ in range(3):
        for r in two:
            next(r)
    state = two[0].state_dict()
    assert state == two[1].state_dict()
    following = sorted(np.concatenate([r.indices(r.step) for r in two]).tolist())
    one = Batches(d, mode="pad", ctx_len=8, micro_bsz=2, seed=2)
    one.load_state_dict(state)
    assert sorted(np.concatenate([one.indices(one.step), one.indices(one.step + 1)]).tolist()) == following


def test_resume_refuses_other_data_or_settings():
    a = Batches(many(10), mode="pad", ctx_len=8, micro_bsz=2, seed=1)
    next(a)
    state = a.state_dict()
    with pytest.raises(DataError, match="documents=10"):
        Batches(many(11), mode="pad", ctx_len=8, micro_bsz=2, seed=1).load_state_dict(state)
    with pytest.raises(DataError, match="seed=1"):
        Batches(many(10), mode="pad", ctx_len=8, micro_bsz=2, seed=2).load_state_dict(state)
    with pytest.raises(DataError, match="multiple of micro_bsz"):
        Batches(many(10), mode="pad", ctx_len=8, micro_bsz=3, seed=1).load_state_dict(state)


def test_is_prime_and_magic_prime():
    primes = [n for n in range(200) if is_prime(n)]
    assert primes == [n for n in range(2, 200) if all(n % k for k in range(2, int(n ** 0.5) + 1))]
    assert is_prime(2_926_181) and not is_prime(2_926_183)
    assert magic_prime(1_498_226_207, 512) == 2_926_181  # MiniPile at ctx 512, as RWKV-LM's make_data prints
    assert magic_prime(59, 3) == 17  # floor(59/3) - 1 = 18 -> 17 (17 % 3 == 2)
    assert magic_prime(8, 3) is None
    for n_tok, ctx in [(1000, 7), (5000, 16), (333, 3)]:
        p = magic_prime(n_tok, ctx)
        limit = n_tok // ctx - 1
        assert p % 3 == 2 and is_prime(p) and p <= limit
        assert not any(q % 3 == 2 and is_prime(q) for q in range(p + 1, limit + 1))


def test_get_mode_magic_prime_visits_every_slot_once():
    flat = list(range(1, 60))  # 59 tokens, ctx 3 -> p = 17
    b = Batches(Documents.from_lists([flat]), mode="get", ctx_len=3, micro_bsz=1, pad_multiple=1)
    assert b.magic_prime == 17 and b.epoch_steps == 17
    pos = [int(b.indices(s)[0]) for s in range(17)]
    assert sorted(pos) == [3 * i for i in range(17)]
    # RWKV-LM's order for seed 0: factor = int(17 * (sqrt(5) - 1) / 2) = 10; slot = 10 * (k + 1)^3 mod 17
    assert pos[:3] == [3 * 10, 3 * 12, 3 * 15]
    assert [int(b.indices(s)[0]) for s in range(17, 34)] == pos  # next pass, same permutation
    x, y = b.batch(0)
    assert x.tolist() == [[31, 32, 33]] and y.tolist() == [[32, 33, 34]]


def test_get_mode_ranks_disjoint_and_seed_rotates_order():
    d = Documents.from_lists([list(range(1, 60))])
    a, c = (Batches(d, mode="get", ctx_len=3, micro_bsz=2, rank=r, world_size=2) for r in (0, 1))
    first = set(a.indices(0).tolist()) | set(a.indices(1).tolist())
    second = set(c.indices(0).tolist()) | set(c.indices(1).tolist())
    assert len(first) == 4 and len(second) == 4 and not (first & second)
    s = Batches(d, mode="get", ctx_len=3, micro_bsz=1, seed=4)
    assert sorted(int(s.indices(k)[0]) for k in range(17)) == [3 * i for i in range(17)]
    assert [int(s.indices(k)[0]) for k in range(17)] != [int(a.indices(k)[0]) for k in range(17)][:17]


def test_get_mode_random_windows_deterministic_and_in_range():
    d = Documents.from_lists([list(range(1, 101))])
    a = Batches(d, mode="get", ctx_len=10, micro_bsz=4, full_coverage=False, seed=3, pad_multiple=1)
    b = Batches(d, mode="get", ctx_len=10, micro_bsz=4, full_coverage=False, seed=3, pad_multiple=1)
    xa, ya = next(a)
    xb, _ = next(b)
    assert torch.equal(xa, xb)
    assert torch.equal(ya[:, :-1], xa[:, 1:])
    assert (xa[:, 0] >= 1).all() and (ya[:, -1] <= 100).all()
    assert a.epoch_samples == 10


def test_get_mode_refusals():
    d = Documents.from_lists([list(range(1, 9))])
    with pytest.raises(DataError, match="at least 3×ctx_len = 12"):
        Batches(d, mode="get", ctx_len=4, micro_bsz=1)
    with pytest.raises(DataError, match="fewer than ctx_len\\+1"):
        Batches(d, mode="get", ctx_len=8, micro_bsz=1, full_coverage=False)
    with pytest.raises(ConfigError, match="qa needs whole documents"):
        Batches(d, mode="get", ctx_len=2, micro_bsz=1, loss_mask="qa")
    with pytest.raises(ConfigError, match="dataload 'stream'"):
        Batches(d, mode="stream", ctx_len=2, micro_bsz=1)


def test_epoch_steps_counts_one_full_pass():
    b = Batches(many(10), mode="pad", ctx_len=8, micro_bsz=4, world_size=2)
    assert b.epoch_steps == math.ceil(10 / 8)
