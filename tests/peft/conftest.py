"""Tiny models and a few-step trainer shared by the PEFT tests (n_layer 2, n_embd 64, head 32, vocab 200)."""

import pytest
import torch
import torch.nn.functional as F

VOCAB = 200


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Every PEFT test runs torch on one thread (`one_thread` in tests/conftest.py)."""


@pytest.fixture
def base_sd():
    """Factory: a random official-format fp32 state dict for version 5/6/7."""
    from rwkv_tune.testing import make_state_dict

    def make(version: int = 7, seed: int = 1, n_embd: int = 64, **kwargs):
        return make_state_dict(version, kwargs.pop("n_layer", 2), n_embd, VOCAB, 32, seed=seed, **kwargs)

    return make


@pytest.fixture
def idx():
    return torch.randint(0, VOCAB, (2, 17), generator=torch.Generator().manual_seed(0))


def loss_of(model, idx):
    logits = model(idx[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), idx[:, 1:].reshape(-1))


@pytest.fixture
def train():
    """Factory: a few Adam steps on one batch; returns (loss before, loss after), both in eval mode."""

    def run(model, params, idx, steps: int = 3, lr: float = 1e-2):
        model.eval()
        with torch.no_grad():
            before = loss_of(model, idx).item()
        model.train()
        opt = torch.optim.Adam(params, lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            loss_of(model, idx).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            after = loss_of(model, idx).item()
        return before, after

    return run
