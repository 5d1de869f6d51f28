"""`peft.probe.probe_logits`: the block-at-a-time fp32 forward that merge verification relies on."""

import pytest
import torch

from rwkv_tune import load_model, peft
from rwkv_tune.peft.probe import probe_logits

METHODS = [{"name": "lora", "r": 8}, {"name": "pissa", "r": 8}, {"name": "bat", "r": 16}, {"name": "state"},
           {"name": "miss", "r": 16, "mode": "mini", "mini_r": 16}, {"name": "full"},
           {"name": "lora", "r": 4, "targets": ["att.key"], "train_parts": ["emb", "head", "ln"]}]


def perturbed_adapter(base, cfg):
    model = load_model({k: v.clone() for k, v in base.items()}, dtype=torch.float32)
    params = peft.apply(model, cfg)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval(), peft.adapter_state_dict(model)


@pytest.mark.parametrize("version", [5, 6, 7])
def test_plain_probe_is_the_model_forward(base_sd, idx, version):
    base = base_sd(version, dtype=torch.bfloat16)
    with torch.no_grad():
        want = load_model({k: v.clone() for k, v in base.items()}, dtype=torch.float32).eval()(idx)
    assert torch.equal(probe_logits(base, idx)["model"], want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("cfg", METHODS, ids=lambda c: c["name"] + "-" + str(c.get("mode", c.get("r", ""))))
@pytest.mark.parametrize("version", [6, 7])
def test_variants_are_training_merge_math_and_the_stored_merge(base_sd, idx, version, cfg, dtype):
    base = base_sd(version, dtype=dtype)
    model, adapter = perturbed_adapter(base, cfg)
    got = probe_logits(base, idx, adapter=adapter)
    with torch.no_grad():
        assert torch.equal(got["adapter"], model(idx))  # what training computes, in fp32
    torch.testing.assert_close(got["folded"], got["adapter"], rtol=1e-5, atol=1e-4)  # the merge math
    merged = probe_logits(peft.merge(base, adapter), idx)["model"]  # the merge as stored in the base's dtype
    assert torch.equal(got["rounded"], merged)
    assert (got["rounded"] is got["folded"]) == (dtype == torch.float32)


def test_quantized_adapter_variant_matches_the_quantized_model(base_sd, idx):
    pytest.importorskip("bitsandbytes")
    base = base_sd(7)
    model, adapter = perturbed_adapter(base, {"name": "lora", "r": 8, "quant": "nf4"})
    got = probe_logits(base, idx, adapter=adapter, quant="nf4")
    with torch.no_grad():
        torch.testing.assert_close(got["adapter"], model(idx), rtol=0, atol=1e-5)
    torch.testing.assert_close(got["folded"], probe_logits(peft.merge(base, adapter, quant="nf4"), idx)["model"],
                               rtol=0, atol=1e-5)


def test_probe_leaves_the_state_dict_and_rng_alone(base_sd, idx):
    base = base_sd(7)
    snapshot = {k: v.clone() for k, v in base.items()}
    _, adapter = perturbed_adapter(base, {"name": "pissa", "r": 8})
    state = torch.random.get_rng_state()
    probe_logits(base, idx, adapter=adapter)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(base[k], v) for k, v in snapshot.items())
