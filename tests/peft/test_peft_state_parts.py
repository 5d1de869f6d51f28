"""State tuning trains only time_state (and merges it into the file); train_parts and full train densely."""

import pytest
import torch

from rwkv_tune import detect, load_model, peft


def fresh(sd):
    """A model on copies of the tensors (load_model keeps the dict's tensors; training changes them)."""
    return load_model({k: v.clone() for k, v in sd.items()})


@pytest.mark.parametrize("version", [5, 6, 7])
def test_state_only_time_state_trains_and_gets_gradients(version, base_sd, idx):
    model = load_model(base_sd(version))
    params = peft.apply(model, {"name": "state", "train_parts": ["time", "ln"], "r": 64})
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names == [f"blocks.{i}.att.time_state" for i in range(2)]
    assert sum(p.numel() for p in params) == 2 * 2 * 32 * 32
    model(idx).logsumexp(-1).mean().backward()
    for p in params:
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_state_layers_and_merged_file(base_sd, idx, train, tmp_path):
    from rwkv_tune.checkpoint import save_state_dict

    base = base_sd(7)
    model = fresh(base)
    params = peft.apply(model, {"name": "state", "layers": "1"})
    assert len(params) == 1 and params[0] is model.blocks[1].att.time_state
    train(model, params, idx, lr=0.5)
    assert torch.count_nonzero(model.blocks[0].att.time_state) == 0
    adapter = peft.adapter_state_dict(model)
    assert sorted(adapter.tensors) == ["blocks.0.att.time_state", "blocks.1.att.time_state"]
    merged = peft.merge(base, adapter)
    path = save_state_dict(merged, tmp_path / "m.pth")
    assert detect(path).time_state
    with torch.no_grad():
        torch.testing.assert_close(load_model(path)(idx), model(idx), rtol=1e-5, atol=1e-5)


def test_state_starts_from_the_base_state(base_sd):
    base = base_sd(6, time_state=True)
    model = fresh(base)
    peft.apply(model, {"name": "state"})
    assert torch.equal(model.blocks[1].att.time_state.detach(), base["blocks.1.att.time_state"])


@pytest.mark.parametrize("version,expect", [
    (7, {"blocks.0.ln1.weight", "blocks.0.att.ln_x.bias", "blocks.1.ln0.weight", "ln_out.bias"}),
    (6, {"blocks.0.att.time_maa_w1", "blocks.1.att.time_faaaa", "blocks.1.ffn.time_maa_k", "ln_out.weight"}),
])
def test_default_parts_time_and_ln_on_lora(version, expect, base_sd):
    model = load_model(base_sd(version))
    peft.apply(model, {"name": "lora", "r": 4})
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert expect - {"blocks.1.ln0.weight"} <= trainable
    assert "emb.weight" not in trainable and "head.weight" not in trainable
    assert not [n for n in trainable if n.endswith((".key.weight", ".value.weight"))]


def test_parts_merge_densely_and_can_be_turned_off(base_sd, idx, train):
    base = base_sd(6)
    model = fresh(base)
    params = peft.apply(model, {"name": "lora", "r": 4, "train_parts": ["time", "ln", "emb", "head"]})
    train(model, params, idx)
    adapter = peft.adapter_state_dict(model)
    merged = peft.merge(base, adapter)
    for key in ("blocks.1.ln2.weight", "blocks.0.att.time_decay", "emb.weight", "head.weight"):
        assert key in adapter.tensors
        assert torch.equal(merged[key], model.state_dict()[key])
        assert not torch.equal(merged[key], base[key])

    off = fresh(base)
    peft.apply(off, {"name": "lora", "r": 4, "train_parts": []})
    assert all(n.endswith(("lora_A", "lora_B")) for n, p in off.named_parameters() if p.requires_grad)


def test_parts_follow_layers(base_sd):
    model = load_model(base_sd(7))
    peft.apply(model, {"name": "lora", "r": 4, "layers": [1]})
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "blocks.1.ln1.weight" in trainable and "ln_out.weight" in trainable
    assert not [n for n in trainable if n.startswith("blocks.0.")]


def test_full_trains_everything_and_merges_to_the_model(base_sd, idx, train):
    base = base_sd(5)
    model = fresh(base)
    params = peft.apply(model, {"name": "full", "train_parts": ["ln"]})
    assert len(params) == len(base)
    train(model, params, idx, steps=1)
    merged = peft.merge(base, peft.adapter_state_dict(model))
    for key, t in model.state_dict().items():
        assert torch.equal(merged[key], t)
