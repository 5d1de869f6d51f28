"""LoRA's zero-init and recorded alpha; PiSSA's W − B₀A₀ + B₀A₀ = W, and its init saved for merge and resume."""

import pytest
import torch

from rwkv_tune import load_model, peft
from rwkv_tune.errors import ConfigError, ModelFileError


def fresh(sd):
    """A model on copies of the tensors (load_model keeps the dict's tensors; training changes them)."""
    return load_model({k: v.clone() for k, v in sd.items()})


def test_lora_b_zero_and_alpha_recorded(base_sd, tmp_path):
    model = load_model(base_sd(7))
    peft.apply(model, {"name": "lora", "r": 8, "alpha": 24})
    layer = model.blocks[0].att.key
    assert torch.count_nonzero(layer.lora_B) == 0 and torch.count_nonzero(layer.lora_A) > 0
    assert layer.scale == 3.0
    adapter = peft.read_adapter(peft.save_adapter(model, tmp_path / "a.safetensors"))
    assert adapter.config.alpha == 24 and adapter.config.r == 8
    assert adapter.tool_version and adapter.base_fingerprint and adapter.base_spec["version"] == 7


def test_merge_refuses_a_different_alpha_for_our_adapter(base_sd, tmp_path):
    from rwkv_tune.merge import merge

    base = base_sd(7)
    model = fresh(base)
    peft.apply(model, {"name": "lora", "r": 8, "alpha": 32})
    path = peft.save_adapter(model, tmp_path / "a.safetensors")
    with pytest.raises(ConfigError, match="--lora-alpha 16 conflicts with the adapter's recorded alpha 32"):
        merge(base, path, tmp_path / "m.pth", alpha=16)


def test_pissa_residual_plus_init_is_w(base_sd):
    base = base_sd(6)
    model = fresh(base)
    peft.apply(model, {"name": "pissa", "r": 8, "svd_niter": 4})
    for name in ("blocks.0.att.key", "blocks.1.ffn.value"):
        layer = model.get_submodule(name)
        w = base[name + ".weight"]
        rebuilt = layer.weight + layer.init_lora_B @ layer.init_lora_A
        torch.testing.assert_close(rebuilt, w, rtol=0, atol=1e-6)
        torch.testing.assert_close(layer.lora_B @ layer.lora_A, layer.init_lora_B @ layer.init_lora_A)
        # B₀A₀ is the principal part: its residual is near the best rank-r error
        s = torch.linalg.svdvals(w)
        assert torch.linalg.norm(layer.weight) <= 1.05 * torch.linalg.norm(s[8:])


def test_pissa_init_is_saved_and_merge_uses_it(base_sd, idx, train, tmp_path):
    base = base_sd(7)
    model = fresh(base)
    params = peft.apply(model, {"name": "pissa", "r": 8, "train_parts": []})
    train(model, params, idx)
    adapter = peft.read_adapter(peft.save_adapter(model, tmp_path / "a.safetensors"))
    key = "blocks.0.att.value"
    assert {f"{key}.init_lora_A", f"{key}.init_lora_B"} <= set(adapter.tensors)
    merged = peft.merge(base, adapter)
    t = adapter.tensors
    w = base[key + ".weight"]
    expected = w - t[key + ".init_lora_B"] @ t[key + ".init_lora_A"] + t[key + ".lora_B"] @ t[key + ".lora_A"]
    torch.testing.assert_close(merged[key + ".weight"], expected)
    forgot_init = w + t[key + ".lora_B"] @ t[key + ".lora_A"]
    assert (merged[key + ".weight"] - forgot_init).abs().max() > 1e-3  # losing the init would be a wrong model
    del t[key + ".init_lora_A"]
    with pytest.raises(ModelFileError, match=f"adapter is missing '{key}.init_lora_A'"):
        peft.merge(base, adapter)


@pytest.mark.parametrize("prepared", [False, True])
def test_pissa_resume_restores_the_trained_model(base_sd, idx, train, tmp_path, prepared):
    base = base_sd(7)
    model = fresh(base)
    cfg = {"name": "pissa", "r": 8}
    params = peft.apply(model, cfg)
    train(model, params, idx)
    path = peft.save_adapter(model, tmp_path / "a.safetensors")
    with torch.no_grad():
        want = model.eval()(idx)

    again = fresh(base)
    if prepared:  # the trainer applies the method, then loads the checkpoint
        peft.apply(again, cfg)
        layer = again.blocks[0].att.key  # pretend this run's SVD came out differently
        layer.init_lora_A.mul_(1.01)
        layer.weight.data = base["blocks.0.att.key.weight"] - layer.init_lora_B @ layer.init_lora_A
    peft.load_adapter(again, path)
    with torch.no_grad():
        got = again.eval()(idx)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_pissa_svd_is_seeded(base_sd):
    a, b = load_model(base_sd(7)), load_model(base_sd(7))
    peft.apply(a, {"name": "pissa", "r": 8})
    torch.manual_seed(123)
    peft.apply(b, {"name": "pissa", "r": 8})
    assert torch.equal(a.blocks[1].ffn.key.init_lora_A, b.blocks[1].ffn.key.init_lora_A)
