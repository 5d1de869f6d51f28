"""Every method on tiny RWKV-7a / 7b models: training lowers the loss, the merged weights give the adapted
model's logits, the merged 7a file loads in the official runtime with the same logits, and the
DeepEmbed-only targets and the `deepembed` train part reach what they name."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rwkv_tune import load_model, peft
from rwkv_tune.errors import ConfigError
from rwkv_tune.merge import merge
from rwkv_tune.peft import PeftConfig

ORACLE = Path(__file__).parents[1] / "model" / "rwkv_pip_oracle.py"
DE_TARGETS_7A = ["att", "ffn", "ffn.s_emb_x"]
DE_TARGETS_7B = DE_TARGETS_7A + ["qkv.qq", "qkv.k_emb_x", "qkv.v_emb_x"]
METHODS = {
    "lora": {"name": "lora", "r": 8, "alpha": 16, "train_parts": ["ln", "deepembed"]},
    "pissa": {"name": "pissa", "r": 8, "svd_niter": 2},
    "miss": {"name": "miss", "r": 16},
    "state": {"name": "state"},
    "full": {"name": "full"},
}


def fresh(sd):
    return load_model({k: v.clone() for k, v in sd.items()})


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def method_config(key: str, variant: str) -> dict:
    cfg = dict(METHODS[key])
    if key in ("lora", "pissa", "miss"):
        cfg["targets"] = DE_TARGETS_7B if variant == "7b" else DE_TARGETS_7A
    return cfg


@pytest.mark.parametrize("variant", ["7a", "7b"])
@pytest.mark.parametrize("key", list(METHODS))
def test_method_trains_and_merges(variant, key, base_sd, idx, train):
    torch.manual_seed(0)
    base = base_sd(7, variant=variant)
    model = fresh(base).eval()
    with torch.no_grad():
        before = model(idx)
    params = peft.apply(model, PeftConfig.from_dict(method_config(key, variant)))
    loss0, loss1 = train(model, params, idx, lr=0.5 if key == "state" else 1e-2)
    assert loss1 < loss0
    with torch.no_grad():
        trained = model(idx)
    assert rel(trained, before) > 1e-4

    merged = peft.merge(base, peft.adapter_state_dict(model))
    expected = list(model.spec.expected_shapes(time_state=True)) if key == "state" else list(base)
    assert list(merged) == expected
    with torch.no_grad():
        got = load_model(merged).eval()(idx)
    assert rel(got, trained) <= 1e-5


@pytest.mark.parametrize("variant", ["7a", "7b"])
def test_deepembed_targets_and_part_are_what_trains(variant, base_sd):
    model = fresh(base_sd(7, variant=variant))
    peft.apply(model, {"name": "lora", "r": 4, "targets": ["ffn.s_emb_x"], "train_parts": ["deepembed"]})
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    tables = ["ffn.s_emb.weight"] + (["qkv.k_emb.weight", "qkv.v_emb.weight"] if variant == "7b" else [])
    want = sorted([f"blocks.{i}.ffn.s_emb_x.{s}" for i in range(2) for s in ("lora_A", "lora_B")]
                  + [f"blocks.{i}.{t}" for i in range(2) for t in tables])
    assert trainable == want


def test_attention_targets_are_refused_on_7a_and_plain_v7(base_sd):
    with pytest.raises(ConfigError, match="qkv.qq"):
        peft.apply(fresh(base_sd(7, variant="7a")), {"name": "lora", "targets": ["qkv.qq"]})
    with pytest.raises(ConfigError, match="ffn.s_emb_x"):
        peft.apply(fresh(base_sd(7)), {"name": "lora", "targets": ["ffn.s_emb_x"]})


@pytest.mark.parametrize("key", ["lora", "pissa", "miss", "full"])
def test_merged_7a_file_loads_in_official_runtime(key, base_sd, idx, train, tmp_path):
    pytest.importorskip("rwkv")
    from rwkv_tune.checkpoint import save_state_dict

    base = base_sd(7, variant="7a")
    base_path = save_state_dict(base, tmp_path / "base.pth")
    model = fresh(base)
    params = peft.apply(model, method_config(key, "7a"))
    train(model, params, idx)
    adapter = peft.save_adapter(model, tmp_path / "adapter.safetensors")
    merge(base_path, adapter, tmp_path / "merged.pth")  # verified against base + adapter

    tokens = idx[0].tolist()
    out = tmp_path / "oracle.pt"
    subprocess.run([sys.executable, str(ORACLE), str(tmp_path / "merged.pth"), "7a", json.dumps(tokens), "6",
                    str(out)], check=True, capture_output=True, timeout=300)
    with torch.no_grad():
        ours = model.eval()(idx[:1])[0]
    assert (ours - torch.load(out)["seq"]).abs().max().item() <= 1e-4


@pytest.mark.parametrize("variant", ["7a", "7b"])
@pytest.mark.parametrize("key", ["lora", "miss", "state", "full"])
def test_count_formula_matches_the_model(variant, key, base_sd):
    model = fresh(base_sd(7, variant=variant))
    cfg = method_config(key, variant)
    params = peft.apply(model, cfg)
    assert peft.count_trainable(model.spec, cfg)["total"] == sum(p.numel() for p in params)
