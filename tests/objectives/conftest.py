"""Tiny v7 models (2 layers, n_embd 64, head 32, vocab 200) and synthetic preference/prompt data."""

import pytest
import torch

VOCAB = 200


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Every objectives test runs torch on one thread (`one_thread` in tests/conftest.py)."""


@pytest.fixture(scope="module")
def base_sd():
    from rwkv_tune.testing import make_state_dict

    return make_state_dict(7, 2, 64, VOCAB, 32, seed=1)


@pytest.fixture
def fresh_model(base_sd):
    """Factory: a freshly loaded base model, with a PEFT method applied when one is named."""
    from rwkv_tune import peft
    from rwkv_tune.model import load_model

    def make(method: dict | None = None):
        model = load_model({k: v.clone() for k, v in base_sd.items()})  # no aliasing between models
        if method is not None:
            torch.manual_seed(0)
            peft.apply(model, method)
        return model

    return make
