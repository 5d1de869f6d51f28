"""Every method on tiny v5/v6/v7 models: zero init changes nothing, training lowers the loss, and the
adapter model's logits equal the merged model's (fp32, rel ≤ 1e-5); the merged file is the base's layout."""

import pytest
import torch

from rwkv_tune import load_model, peft
from rwkv_tune.errors import ConfigError
from rwkv_tune.peft import PeftConfig


def fresh(sd):
    """A model on copies of the tensors (load_model keeps the dict's tensors; training changes them)."""
    return load_model({k: v.clone() for k, v in sd.items()})

METHODS = {
    "lora": {"name": "lora", "r": 8, "alpha": 16},
    "lora-rs-dropout": {"name": "lora", "r": 8, "alpha": 16, "rslora": True, "dropout": 0.1},
    "pissa": {"name": "pissa", "r": 8, "svd_niter": 2},
    "bone": {"name": "bone", "r": 16},
    "bat": {"name": "bat", "r": 16},
    "mini": {"name": "miss", "mode": "mini", "r": 16, "mini_r": 4},
    "state": {"name": "state"},
    "full": {"name": "full"},
    "lora-no-parts-top-layer": {"name": "lora", "r": 8, "train_parts": [], "layers": "1", "targets": ["att", "ffn.key"]},
}
ADAPTER_SUFFIXES = (".lora_A", ".lora_B", ".init_lora_A", ".init_lora_B", ".miss", ".disha")


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("version", [5, 6, 7])
@pytest.mark.parametrize("key", list(METHODS))
def test_adapter_forward_equals_merged_forward(version, key, base_sd, idx, train, tmp_path):
    torch.manual_seed(0)
    base = base_sd(version)
    model = fresh(base).eval()
    with torch.no_grad():
        before = model(idx)
    params = peft.apply(model, PeftConfig.from_dict(METHODS[key]))
    assert params and all(p.requires_grad for p in params)
    model.eval()
    with torch.no_grad():
        at_init = model(idx)
    assert rel(at_init, before) <= 1e-5  # zero-init adapters (and PiSSA's W − B₀A₀ + B₀A₀) change nothing

    lr = 0.5 if key == "state" else 1e-2
    loss0, loss1 = train(model, params, idx, lr=lr)
    assert loss1 < loss0
    with torch.no_grad():
        trained = model(idx)
    assert rel(trained, before) > 1e-4  # the adapter really moved

    path = peft.save_adapter(model, tmp_path / "adapter.safetensors")
    adapter = peft.read_adapter(path)
    assert adapter.metadata()["method"] == {"bone": "miss", "bat": "miss", "mini": "miss"}.get(
        key, METHODS[key]["name"])  # the canonical name is written, whatever alias was used
    merged = peft.merge(base, adapter)

    expected_keys = list(model.spec.expected_shapes(time_state=True)) if key == "state" else list(base)
    assert list(merged) == expected_keys
    assert not [k for k in merged if k.endswith(ADAPTER_SUFFIXES)]
    for k, t in base.items():
        assert merged[k].shape == t.shape and merged[k].dtype == t.dtype
    with torch.no_grad():
        got = load_model(merged).eval()(idx)
    assert rel(got, trained) <= 1e-5


def test_bf16_base_with_fp32_adapter_params_runs(base_sd, idx):
    """The trainer keeps trainable params in fp32 under a bf16 model: the adapters compute in x's dtype."""
    model = load_model(base_sd(7), dtype=torch.bfloat16)
    params = peft.apply(model, {"name": "lora", "r": 8, "train_parts": []})
    for p in params:
        p.data = p.data.float()
    model(idx).float().mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in params)


def test_bat_non_divisible_is_one_line_and_leaves_the_model_alone(base_sd):
    model = load_model(base_sd(7))
    with pytest.raises(ConfigError) as info:
        peft.apply(model, {"name": "bat", "r": 24})
    msg = str(info.value)
    assert "\n" not in msg and "blocks.0.att.receptance [out, in] = [64, 64]" in msg and "r: 16" in msg
    assert getattr(model, "peft_info", None) is None
    assert all(p.requires_grad for p in model.parameters())


def test_v7_has_no_gate_target(base_sd):
    with pytest.raises(ConfigError, match="RWKV-7 has no att.gate"):
        peft.apply(load_model(base_sd(7)), {"name": "lora", "targets": ["att.gate"]})


def test_rank_too_large(base_sd):
    with pytest.raises(ConfigError, match="method.r = 128 is larger than blocks.0.att.receptance"):
        peft.apply(load_model(base_sd(7)), {"name": "lora", "r": 128})


def test_layers_and_targets_select_modules(base_sd):
    model = load_model(base_sd(6))
    peft.apply(model, {"name": "lora", "r": 4, "layers": "1", "targets": ["att.gate", "ffn.receptance"],
                       "train_parts": []})
    wrapped = sorted(n for n, p in model.named_parameters() if n.endswith("lora_A"))
    assert wrapped == ["blocks.1.att.gate.lora_A", "blocks.1.ffn.receptance.lora_A"]


def bone_loop(d, in_f):
    r, out_f = d.shape
    dw = torch.zeros(out_f, in_f)
    for o in range(out_f):
        for i in range(in_f):
            dw[o, i] = d[i % r, o]
    return dw


def bat_loop(w, d, r, index):
    dw = torch.zeros_like(w)
    for a in range(w.shape[0] // r):
        for b in range(w.shape[1] // r):
            blk = w[a * r:(a + 1) * r, b * r:(b + 1) * r]
            k = d[a] if index == "out" else d[b]
            dw[a * r:(a + 1) * r, b * r:(b + 1) * r] = blk @ k + k
    return dw


@pytest.mark.parametrize("index", ["out", "in"])
def test_bat_block_indexing(index):
    """Bat is ΔW_{a,b} = W_{a,b}·D_k + D_k with k the output block (ours, HF) or the input block (RWKV-PEFT G1)."""
    from rwkv_tune.peft.miss import MissLinear

    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(12, 8, bias=False)
    cfg = PeftConfig.from_dict({"name": "bat", "r": 4, "extra": {"bat_index": index}})
    layer = MissLinear(lin, cfg)
    with torch.no_grad():
        layer.miss.copy_(torch.randn(layer.miss.shape, generator=g))
    x = torch.randn(3, 12, generator=g)
    want_w = lin.weight + bat_loop(lin.weight.detach(), layer.miss.detach(), 4, index)
    torch.testing.assert_close(layer(x), x @ want_w.T)
    merged = peft.get_method("bat").merge_weight(lin.weight.detach(), {"miss": layer.miss.detach()}, cfg, lambda w: w)
    torch.testing.assert_close(merged, want_w)


def test_bone_pads_the_last_shard():
    """in = 20, r = 8: the third shard is padded; ΔW[o, i] = D[i mod r, o] in forward and merge."""
    from rwkv_tune.peft.miss import MissLinear

    g = torch.Generator().manual_seed(1)
    lin = torch.nn.Linear(20, 6, bias=False)
    cfg = PeftConfig.from_dict({"name": "bone", "r": 8})
    layer = MissLinear(lin, cfg)
    with torch.no_grad():
        layer.miss.copy_(torch.randn(8, 6, generator=g))
    x = torch.randn(4, 20, generator=g)
    want_w = lin.weight.detach() + bone_loop(layer.miss.detach(), 20)
    torch.testing.assert_close(layer(x), x @ want_w.T)
    merged = peft.get_method("miss").merge_weight(lin.weight.detach(), {"miss": layer.miss.detach()}, cfg,
                                                  lambda w: w)
    torch.testing.assert_close(merged, want_w)
