"""Tiny models, a learnable synthetic corpus and presets for the training tests."""

import numpy as np
import pytest

from rwkv_tune.data import write_binidx
from rwkv_tune.testing import make_model

VOCAB = 200


def counting_corpus(prefix, n_docs: int = 64, seed: int = 0):
    """Documents that count upward (mod 190, from a random start): the next token is learnable."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        start, length = int(rng.integers(1, 190)), int(rng.integers(24, 60))
        docs.append([(start + i) % 190 + 5 for i in range(length)] + [0])
    write_binidx(prefix, docs)
    return str(prefix)


@pytest.fixture
def train_setup(tmp_path):
    """Factory: (model path, data prefix, preset dict) for a tiny CPU run."""

    def make(version: int = 7, method: str = "lora", **train_overrides):
        model = make_model(tmp_path / f"base-v{version}.pth", version=version, n_layer=2, n_embd=64, head_size=32,
                           vocab_size=VOCAB)
        data = counting_corpus(tmp_path / "corpus")
        train = {"micro_bsz": 4, "epoch_steps": 6, "epoch_count": 2, "lr_init": 3e-3, "lr_final": 1e-3,
                 "precision": "fp32", "grad_cp": False, "device": "cpu", "seed": 1, **train_overrides}
        preset = {
            "model": {"path": str(model)},
            "method": {"name": method, "r": 8, "alpha": 16},
            "data": {"path": data, "ctx_len": 32, "dataload": "pad"},
            "train": train,
            "output": {"dir": str(tmp_path / "run")},
        }
        return model, data, preset

    return make
