"""Our models: state-dict round trips, recurrent stepping, grad checkpointing, time_state, dtypes."""

import pytest
import torch

from rwkv_tune import load_model
from rwkv_tune.testing import make_state_dict


@pytest.mark.parametrize("version", [5, 6, 7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_state_dict_round_trip(tiny_model, version, dtype):
    path = tiny_model(version, n_layer=2, n_embd=64, head_size=32, dtype=dtype)
    original = torch.load(path)
    sd = load_model(path).state_dict()
    assert list(sd) == list(original)
    for key, tensor in original.items():
        assert sd[key].shape == tensor.shape and sd[key].dtype == tensor.dtype
        assert torch.equal(sd[key], tensor), key


def test_round_trip_keeps_a_non_official_key_order():
    sd = make_state_dict(7, 2, 64, head_size=32)
    keys = list(sd)
    reordered = {k: sd[k] for k in reversed(keys)}
    assert list(load_model(reordered).state_dict()) == list(reversed(keys))


@pytest.mark.parametrize("version", [5, 6, 7])
def test_recurrent_steps_equal_the_sequence(version):
    model = load_model(make_state_dict(version, 2, 64, vocab_size=200, head_size=32)).eval()
    idx = torch.randint(0, 200, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = model(idx)
        state = None
        stepped = []
        for t in range(idx.shape[1]):
            logits, state = model.step(idx[:, t], state)
            stepped.append(logits)
    assert (torch.stack(stepped, 1) - whole).abs().max() < 1e-4


@pytest.mark.parametrize("version", [6, 7])
def test_grad_checkpointing_gives_the_same_gradients(version):
    model = load_model(make_state_dict(version, 2, 64, vocab_size=200, head_size=32)).train()
    idx = torch.randint(0, 200, (2, 20), generator=torch.Generator().manual_seed(0))

    def grads(grad_cp: bool):
        model.zero_grad()
        model.grad_cp = grad_cp
        model(idx).logsumexp(-1).mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys() and len(plain) > 10
    for name in plain:
        assert torch.allclose(plain[name], checkpointed[name], atol=1e-6, rtol=1e-5), name


@pytest.mark.parametrize("version", [5, 6, 7])
def test_time_state_is_the_initial_state(version):
    sd = make_state_dict(version, 2, 64, vocab_size=200, head_size=32, time_state=True)
    model = load_model(sd).eval()
    idx = torch.randint(0, 200, (1, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        with_state = model(idx)
        for block in model.blocks:
            block.att.time_state.zero_()
        zero_state = model(idx)
    assert (with_state - zero_state).abs().max() > 1e-3
    assert "blocks.1.att.time_state" in model.state_dict()


def test_bf16_model_runs_and_stays_bf16():
    model = load_model(make_state_dict(7, 2, 64, vocab_size=200, head_size=32), dtype=torch.bfloat16)
    logits = model(torch.randint(0, 200, (1, 17)))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()


def test_naive_and_chunked_ops_agree_inside_the_model():
    model = load_model(make_state_dict(7, 2, 64, vocab_size=200, head_size=32)).eval()
    idx = torch.randint(0, 200, (2, 70), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        chunked = model(idx)
        model.set_op("naive")
        naive = model(idx)
    assert (chunked - naive).abs().max() < 1e-4
