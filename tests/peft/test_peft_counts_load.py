"""Trainable counts match the formulas; summaries and groups; adapters load back onto the right base only."""

import pytest
import torch

from rwkv_tune import load_model, peft
from rwkv_tune.errors import ConfigError, ModelFileError
from rwkv_tune.spec import ModelSpec


def fresh(sd):
    """A model on copies of the tensors (load_model keeps the dict's tensors; training changes them)."""
    return load_model({k: v.clone() for k, v in sd.items()})

CASES = [{"name": "lora", "r": 8}, {"name": "pissa", "r": 4, "train_parts": ["emb"]}, {"name": "bone", "r": 16},
         {"name": "bat", "r": 16, "layers": "0"}, {"name": "miss", "mode": "mini", "r": 8, "mini_r": 16},
         {"name": "state"}, {"name": "full"}]


@pytest.mark.parametrize("version", [5, 6, 7])
@pytest.mark.parametrize("cfg", CASES, ids=[c["name"] for c in CASES])
def test_formula_matches_the_model(version, cfg, base_sd):
    model = load_model(base_sd(version))
    params = peft.apply(model, cfg)
    counts = peft.count_trainable(model.spec, cfg)
    assert counts["total"] == sum(p.numel() for p in params)
    summary = peft.trainable_summary(model)
    assert summary["trainable"] == counts["total"]
    assert summary["percent"] == pytest.approx(100 * counts["total"] / model.spec.params)


def v7_spec(n_layer: int, n_embd: int) -> ModelSpec:
    return ModelSpec(version=7, n_layer=n_layer, n_embd=n_embd, n_head=n_embd // 64, head_size=64, vocab_size=65536,
                     dim_ffn=4 * n_embd, lora_dims={"w": 96, "a": 96, "v": 64, "g": 256})


def test_published_counts():
    spec = v7_spec(1, 2048)  # one v7 1.5B layer: "DiSHA(r) = 2 × LoRA(r)"
    assert peft.count_trainable(spec, {"name": "bone", "r": 64})["adapter"] == 1_179_648
    assert peft.count_trainable(spec, {"name": "lora", "r": 32})["adapter"] == 1_179_648
    # RWKV-PEFT PR #81: v7 13.3B (L61, C4096), LoRA r=32 → 143,917,056 trainable
    assert peft.count_trainable(v7_spec(61, 4096), {"name": "lora", "r": 32, "train_parts": []})["total"] \
        == 143_917_056


def test_param_groups_and_summary(base_sd):
    model = load_model(base_sd(7))
    peft.apply(model, {"name": "lora", "r": 4})
    groups = {g["name"]: g["params"] for g in peft.param_groups(model)}
    assert set(groups) == {"adapter", "dense"}
    assert len(groups["adapter"]) == 2 * 6 * 2
    summary = peft.trainable_summary(model)
    assert summary["by_group"]["adapter"] == 2 * (4 * 4 * 128 + 2 * 4 * 320)
    assert summary["quantized"] == 0 and summary["total"] == model.spec.params + summary["by_group"]["adapter"]


def test_load_adapter_on_fresh_base_and_wrong_base(base_sd, idx, train, tmp_path):
    base = base_sd(7)
    model = fresh(base)
    params = peft.apply(model, {"name": "bone", "r": 16})
    train(model, params, idx)
    path = peft.save_adapter(model, tmp_path / "a.safetensors")
    again = fresh(base)
    peft.load_adapter(again, path)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(idx), model.eval()(idx))

    other = load_model(base_sd(7, seed=2))
    with pytest.raises(ModelFileError, match="trained on a different base model") as info:
        peft.load_adapter(other, path)
    assert "\n" not in str(info.value)
    peft.load_adapter(load_model(base_sd(7, seed=2)), path, force=True)


def test_load_onto_a_model_with_another_config(base_sd, tmp_path):
    base = base_sd(7)
    model = fresh(base)
    peft.apply(model, {"name": "lora", "r": 4})
    path = peft.save_adapter(model, tmp_path / "a.safetensors")
    other = fresh(base)
    peft.apply(other, {"name": "lora", "r": 8})
    with pytest.raises(ConfigError, match="method.r = 4"):
        peft.load_adapter(other, path)


def test_misuse_errors(base_sd, tmp_path):
    model = load_model(base_sd(7))
    with pytest.raises(ConfigError, match="no PEFT method applied"):
        peft.save_adapter(model, tmp_path / "a.safetensors")
    peft.apply(model, {"name": "lora", "r": 4})
    with pytest.raises(ConfigError, match="already has method lora applied"):
        peft.apply(model, {"name": "lora", "r": 4})
    with pytest.raises(ConfigError, match="must end in .safetensors"):
        peft.save_adapter(model, tmp_path / "a.pth")
    cfg = peft.PeftConfig.from_dict({"name": "lora", "r": 4})
    assert peft.save_adapter(model, cfg, tmp_path / "b.safetensors").exists()  # the trainer's call shape
