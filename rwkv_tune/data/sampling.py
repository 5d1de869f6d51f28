"""Training batches: dataload modes get / pad / only; deterministic, sharded per rank, resumable.

Batch contract: `Batch(x, y)`, both `torch.LongTensor[B, T]`. `y` holds the next-token targets
with the loss mask folded in: `IGNORE` (-100) wherever no loss is taken (padding, masked prompt,
alignment to a multiple of `pad_multiple`), so `F.cross_entropy(..., ignore_index=-100)` is the
whole loss. A batch may have no learned target at all (e.g. `sft` with a prompt longer than
ctx_len); guard the mean against it.

The sample stream is global and stateless: sample k of step s on rank r is
k = s·G + b·world_size + r (G = micro_bsz·world_size, b the row), and which document or window it
reads is a pure function of (seed, k). So ranks read disjoint samples, and the cursor is just the
number of samples consumed: resume continues exactly, even with another world size that divides it.

- `pad`: one document per row, truncated to ctx_len+1 tokens and right-padded to T = ctx_len
  (rounded up to pad_multiple). Epoch e is a permutation of all usable documents seeded by
  (seed, e); epochs follow each other without a gap, so every document is used once per epoch.
- `only`: the same stream, rows unpadded except for alignment; micro_bsz must be 1.
- `get`: ctx_len+1 windows of the flat token stream. With full_coverage the window slots follow
  RWKV-LM's magic-prime permutation (slot = ⌊p·(√5−1)/2⌋·(k+1+seed)³ mod p, every slot once per
  p samples; seed 0 gives RWKV-LM's exact order); without it, uniformly random offsets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from rwkv_tune.data.masks import LossMarkers, check_loss_mask, loss_flags
from rwkv_tune.errors import ConfigError, DataError
from rwkv_tune.preset import schema

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from rwkv_tune.data.binidx import Documents
    from rwkv_tune.data.tokenizer import WorldTokenizer

IGNORE = -100
MODES = schema.DATALOADS
STATE_VERSION = 1


class Batch(NamedTuple):
    """Inputs x and targets y (IGNORE where no loss), both LongTensor[B, T]."""

    x: torch.Tensor
    y: torch.Tensor


def is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin, exact for every n below 3.3e24."""
    if n < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    for p in small:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in small:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def magic_prime(num_tokens: int, ctx_len: int) -> int | None:
    """Largest prime p ≡ 2 (mod 3) with p ≤ ⌊num_tokens/ctx_len⌋ − 1 (None below 3·ctx_len tokens)."""
    if num_tokens < 3 * ctx_len:
        return None
    p = num_tokens // ctx_len - 1
    while p >= 2:
        if p % 3 == 2 and is_prime(p):
            return p
        p -= 1
    return None


def usable(sizes: np.ndarray) -> np.ndarray:
    """Indices of documents that give at least one target (two tokens or more)."""
    return np.flatnonzero(np.asarray(sizes) >= 2)


def round_up(n: int, multiple: int) -> int:
    """n rounded up to a multiple (T for kernels that need T % 16 == 0)."""
    return -(-n // multiple) * multiple


def doc_sample(tokens: np.ndarray, ctx_len: int, loss_mask: str, tokenizer: WorldTokenizer | None = None,
               markers: LossMarkers | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One document → unpadded (x, y): at most ctx_len inputs, targets with IGNORE where masked."""
    t = np.asarray(tokens[:ctx_len + 1], dtype=np.int64)
    x, y = t[:-1], t[1:].copy()
    if loss_mask in ("qa", "sft"):
        if tokenizer is None:
            from rwkv_tune.data.tokenizer import get_tokenizer

            tokenizer = get_tokenizer()
        y[~loss_flags(t, loss_mask, tokenizer, markers)[1:]] = IGNORE
    return x, y


@dataclass(frozen=True)
class _Plan:
    epoch_samples: int
    prime: int | None


class Batches:
    """An endless iterator of `Batch` for one rank; `state_dict()` / `load_state_dict()` resume exactly."""

    def __init__(self, docs: Documents, *, mode: str, ctx_len: int, micro_bsz: int, loss_mask: str = "pad",
                 seed: int = 0, rank: int = 0, world_size: int = 1, pad_multiple: int = 16, shuffle: bool = True,
                 full_coverage: bool = True, markers: LossMarkers | None = None,
                 tokenizer: WorldTokenizer | None = None):
        if mode not in MODES:
            raise ConfigError(f"dataload {mode!r} is not known", f"Use one of: {', '.join(MODES)}.")
        check_loss_mask(loss_mask)
        for name, value in (("ctx_len", ctx_len), ("micro_bsz", micro_bsz), ("world_size", world_size),
                            ("pad_multiple", pad_multiple)):
            if value < 1:
                raise ConfigError(f"{name} is {value}", f"Set {name} to 1 or more.")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside world_size {world_size}", "Use 0 ≤ rank < world_size.")
        if mode == "only" and micro_bsz != 1:
            raise ConfigError(f"dataload only needs micro_bsz 1, got {micro_bsz}",
                              "Set micro_bsz 1, or use dataload pad to batch padded documents.")
        if mode == "get" and loss_mask in ("qa", "sft"):
            raise ConfigError(f"loss_mask {loss_mask} needs whole documents, but dataload get cuts windows",
                              "Use dataload pad (or only) with qa/sft masks.")
        self.docs, self.mode, self.ctx_len, self.micro_bsz = docs, mode, ctx_len, micro_bsz
        self.loss_mask, self.seed, self.rank, self.world_size = loss_mask, seed, rank, world_size
        self.pad_multiple, self.shuffle, self.full_coverage = pad_multiple, shuffle, full_coverage
        self.markers, self.tokenizer = markers, tokenizer
        self.samples = 0
        self.real_tokens = 0  # inputs read by __next__ on this rank, without padding (progress counts these)
        self._last_real = 0
        self._order_epoch = -1
        self._order = np.zeros(0, dtype=np.int64)
        self._usable = usable(docs.sizes) if mode != "get" else np.zeros(0, dtype=np.int64)
        self._plan = self._make_plan()

    def _make_plan(self) -> _Plan:
        n_tok = self.docs.num_tokens
        if self.mode != "get":
            if len(self._usable) == 0:
                raise DataError(f"{self.docs.name} has no document with 2 or more tokens",
                                "Check the data (rwkv-tune data inspect).")
            return _Plan(len(self._usable), None)
        if n_tok < self.ctx_len + 1:
            raise DataError(f"{self.docs.name} has {n_tok} tokens, fewer than ctx_len+1 = {self.ctx_len + 1}",
                            "Use a smaller ctx_len or more data.")
        if not self.full_coverage:
            return _Plan(max(1, n_tok // self.ctx_len), None)
        p = magic_prime(n_tok, self.ctx_len)
        if p is None:
            raise DataError(f"{self.docs.name} has {n_tok} tokens; dataload get with full coverage needs at "
                            f"least 3×ctx_len = {3 * self.ctx_len}",
                            "Use dataload pad, a smaller ctx_len, or full_coverage off.")
        return _Plan(p, p)

    @property
    def usable_documents(self) -> np.ndarray:
        """Indices of the documents that give a target (pad/only modes; empty in get mode)."""
        return self._usable

    @property
    def global_bsz(self) -> int:
        """Samples per step over all ranks."""
        return self.micro_bsz * self.world_size

    @property
    def epoch_samples(self) -> int:
        """Samples (over all ranks) in one full pass: usable documents, or get's window slots."""
        return self._plan.epoch_samples

    @property
    def epoch_steps(self) -> int:
        """Steps (batches per rank) that make one full pass over the data."""
        return math.ceil(self.epoch_samples / self.global_bsz)

    @property
    def magic_prime(self) -> int | None:
        """get mode's prime (window slots per pass), None in other modes."""
        return self._plan.prime

    @property
    def step(self) -> int:
        """Index of the next batch."""
        return self.samples // self.global_bsz

    @property
    def epoch(self) -> int:
        """Full passes completed."""
        return self.samples // self.epoch_samples

    def sample_ids(self, step: int) -> np.ndarray:
        """Global sample numbers this rank reads at `step`."""
        return step * self.global_bsz + np.arange(self.micro_bsz) * self.world_size + self.rank

    def indices(self, step: int) -> np.ndarray:
        """What this rank reads at `step`: document indices (pad/only) or token offsets (get)."""
        ks = self.sample_ids(step)
        if self.mode == "get":
            if self._plan.prime is not None:
                p = self._plan.prime
                factor = int(p * (math.sqrt(5) - 1) / 2)
                return np.array([factor * pow(int(k) + 1 + self.seed, 3, p) % p * self.ctx_len for k in ks],
                                dtype=np.int64)
            rng = np.random.default_rng([self.seed, step])
            offsets = rng.integers(0, self.docs.num_tokens - self.ctx_len, size=self.global_bsz)
            return offsets[np.arange(self.micro_bsz) * self.world_size + self.rank].astype(np.int64)
        n = self.epoch_samples
        return np.array([self._epoch_order(int(k) // n)[int(k) % n] for k in ks], dtype=np.int64)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if epoch != self._order_epoch:
            self._order = (np.random.default_rng([self.seed, epoch]).permutation(self._usable)
                           if self.shuffle else self._usable)
            self._order_epoch = epoch
        return self._order

    def rows(self, step: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """The unpadded (x, y) rows of this rank's batch at `step` (what `batch` pads)."""
        rows = []
        for i in self.indices(step):
            if self.mode == "get":
                w = np.asarray(self.docs.tokens[i:i + self.ctx_len + 1], dtype=np.int64)
                rows.append((w[:-1], w[1:].copy()))
            else:
                rows.append(doc_sample(self.docs[int(i)], self.ctx_len, self.loss_mask, self.tokenizer, self.markers))
        return rows

    def batch(self, step: int) -> Batch:
        """This rank's batch at `step`, padded on the right to T (a multiple of pad_multiple)."""
        import torch

        rows = self.rows(step)
        self._last_real = sum(len(xr) for xr, _ in rows)
        width = self.ctx_len if self.mode != "only" else len(rows[0][0])
        T = round_up(width, self.pad_multiple)
        x = np.zeros((len(rows), T), dtype=np.int64)
        y = np.full((len(rows), T), IGNORE, dtype=np.int64)
        for b, (xr, yr) in enumerate(rows):
            x[b, :len(xr)] = xr
            y[b, :len(yr)] = yr
            if self.loss_mask == "none" and self.mode == "pad":
                y[b, len(yr):self.ctx_len] = 0
        return Batch(torch.from_numpy(x), torch.from_numpy(y))

    def __iter__(self) -> Batches:
        return self

    def __next__(self) -> Batch:
        out = self.batch(self.step)
        self.real_tokens += self._last_real
        self.samples += self.global_bsz
        return out

    def _fingerprint(self) -> dict[str, Any]:
        fp: dict[str, Any] = {"mode": self.mode, "seed": self.seed, "documents": len(self.docs),
                              "tokens": self.docs.num_tokens, "shuffle": self.shuffle}
        if self.mode == "get":
            fp.update(ctx_len=self.ctx_len, full_coverage=self.full_coverage)
        return fp

    def state_dict(self) -> dict[str, Any]:
        """The data cursor (same on every rank): samples consumed plus what they were drawn from."""
        return {"version": STATE_VERSION, "samples": self.samples, **self._fingerprint()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly after the last batch of a saved run; refuse a cursor from other data or settings."""
        if state.get("version") != STATE_VERSION:
            raise DataError(f"data cursor version {state.get('version')!r} is not {STATE_VERSION}",
                            "Resume with the rwkv-tune version that wrote it, or start fresh.")
        for key, value in self._fingerprint().items():
            if state.get(key) != value:
                raise DataError(f"data cursor was saved with {key}={state.get(key)!r}, this run has {value!r}",
                                "Resume with the same data and data settings, or start a fresh run.")
        samples = int(state["samples"])
        if samples % self.global_bsz:
            raise DataError(f"data cursor is at sample {samples}, not a multiple of micro_bsz×world_size = "
                            f"{self.global_bsz}", "Resume with the batch size and GPU count of the saved run.")
        self.samples = samples

    def report(self) -> dict[str, Any]:
        """Facts the trainer should show before starting: pass length, truncation, coverage."""
        out: dict[str, Any] = {"mode": self.mode, "epoch_samples": self.epoch_samples, "epoch_steps": self.epoch_steps}
        sizes = self.docs.sizes
        if self.mode == "get":
            if self._plan.prime is not None:
                slots = self.docs.num_tokens // self.ctx_len
                out.update(magic_prime=self._plan.prime, coverage=self._plan.prime * self.ctx_len / self.docs.num_tokens,
                           slots=slots)
        else:
            out.update(documents=len(sizes), unusable=int(len(sizes) - len(self._usable)),
                       truncated=int((sizes > self.ctx_len + 1).sum()))
        return out

    def warnings(self) -> list[str]:
        """Human sentences for what the report says is lost (never silent)."""
        r, out = self.report(), []
        if r.get("truncated"):
            out.append(f"{r['truncated']} of {r['documents']} documents are longer than ctx_len+1 = "
                       f"{self.ctx_len + 1} tokens and are cut there (raise ctx_len or split them)")
        if r.get("unusable"):
            out.append(f"{r['unusable']} documents have fewer than 2 tokens and are skipped")
        if "coverage" in r and r["coverage"] < 0.99:
            out.append(f"get mode covers {r['coverage']:.1%} of the tokens per pass (magic prime {r['magic_prime']})")
        return out
