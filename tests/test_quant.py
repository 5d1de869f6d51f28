"""int8 / nf4 / fp4 frozen bases under adapters: forward + backward on CPU, storage, and quant-aware merge."""

import pytest
import torch
import torch.nn.functional as F

from rwkv_tune import load_model, peft
from rwkv_tune.errors import ConfigError
from rwkv_tune.testing import make_state_dict

pytest.importorskip("bitsandbytes")
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
VOCAB = 200


def base_sd(version=7, seed=1):
    return make_state_dict(version, 2, 64, VOCAB, 32, seed=seed)


def fresh(sd):
    return load_model({k: v.clone() for k, v in sd.items()})


IDX = torch.randint(0, VOCAB, (2, 17), generator=torch.Generator().manual_seed(0))


def loss_of(model):
    logits = model(IDX[:, :-1])
    return F.cross_entropy(logits.reshape(-1, VOCAB), IDX[:, 1:].reshape(-1))


def train(model, params, steps=3, lr=1e-2):
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    for _ in range(steps + 1):
        opt.zero_grad()
        loss = loss_of(model)
        losses.append(loss.item())
        loss.backward()
        opt.step()
    return losses


@pytest.mark.parametrize("kind", ["int8", "nf4", "fp4"])
@pytest.mark.parametrize("method", [{"name": "lora", "r": 8}, {"name": "bat", "r": 16}, {"name": "pissa", "r": 8}],
                         ids=["lora", "bat", "pissa"])
def test_adapter_trains_on_a_quantized_base(kind, method):
    base = base_sd(7)
    model = fresh(base)
    params = peft.apply(model, {**method, "quant": kind})
    layer = model.blocks[1].ffn.key
    assert layer.weight is None and layer.qweight.kind == kind
    quantized = {id(b) for m in model.modules() if getattr(m, "qweight", None) is not None for b in m.qweight.buffers()}
    assert not quantized & {id(p) for p in params}
    assert all(not n.endswith((".key.weight", ".value.weight", ".receptance.weight", ".output.weight"))
               for n, p in model.named_parameters() if p.requires_grad)
    # emb and head are never quantized, and stay frozen
    assert isinstance(model.head, torch.nn.Linear) and torch.equal(model.head.weight, base["head.weight"])
    assert torch.equal(model.emb.weight, base["emb.weight"]) and not model.emb.weight.requires_grad
    losses = train(model, params)
    assert losses[-1] < losses[0]
    assert all(p.grad is not None for p in params if p.ndim == 2)


@pytest.mark.parametrize("kind,limit", [("nf4", 0.35), ("int8", 0.55)])
def test_storage_is_smaller_than_bf16(kind, limit):
    from rwkv_tune.quant import storage_report

    model = fresh(base_sd(6))
    peft.apply(model, {"name": "lora", "r": 8, "quant": kind})
    report = storage_report(model)
    assert report["layers"] == 2 * 8
    assert report["ratio"] <= limit
    summary = peft.trainable_summary(model)
    assert summary["quantized"] == sum(m.qweight.numel for m in model.modules() if getattr(m, "qweight", None) is not None)


@pytest.mark.parametrize("kind", ["int8", "nf4"])
def test_pure_merge_is_quant_aware_only_when_asked(kind):
    base = base_sd(7)
    model = fresh(base)
    params = peft.apply(model, {"name": "pissa", "r": 8, "quant": kind, "train_parts": []})
    train(model, params)
    adapter = peft.adapter_state_dict(model)
    with torch.no_grad():
        trained = model(IDX)
        aware = load_model(peft.merge(base, adapter, quant=kind))(IDX)
        torch.testing.assert_close(aware, trained, rtol=1e-5, atol=1e-5)

        plain = load_model(peft.merge(base, adapter))(IDX)  # the pure function: full precision unless asked
        unquantized = fresh(base)
        unq_cfg = peft.PeftConfig.from_dict({**adapter.config.to_dict(), "quant": "none"})
        peft.load_adapter(unquantized, peft.Adapter(adapter.tensors, unq_cfg, adapter.base_fingerprint))
        torch.testing.assert_close(plain, unquantized(IDX), rtol=1e-5, atol=1e-5)
        assert (plain - trained).abs().max() > 1e-4


def test_pissa_svd_runs_on_the_full_precision_weight():
    base = base_sd(7)
    model = fresh(base)
    peft.apply(model, {"name": "pissa", "r": 8, "quant": "nf4"})
    ref = fresh(base)
    peft.apply(ref, {"name": "pissa", "r": 8})
    assert torch.equal(model.blocks[0].att.key.init_lora_A, ref.blocks[0].att.key.init_lora_A)


def test_state_tuning_on_an_int8_base():
    model = fresh(base_sd(6))
    params = peft.apply(model, {"name": "state", "quant": "int8"})
    assert [n for n, p in model.named_parameters() if p.requires_grad] == \
        ["blocks.0.att.time_state", "blocks.1.att.time_state"]
    assert model.blocks[0].att.gate.qweight is not None
    losses = train(model, params, lr=0.5)
    assert losses[-1] < losses[0]


def test_full_with_quant_is_refused():
    with pytest.raises(ConfigError, match="method full trains them"):
        peft.apply(fresh(base_sd(7)), {"name": "full", "quant": "nf4"})


@pytest.mark.parametrize("kind", ["int8", "nf4"])
def test_file_merge_defaults_to_the_recorded_quant(kind, tmp_path):
    from rwkv_tune.checkpoint import save_state_dict
    from rwkv_tune.merge import merge

    base = base_sd(7)
    model = fresh(base)
    params = peft.apply(model, {"name": "lora", "r": 8, "quant": kind, "train_parts": []})
    train(model, params)
    path = peft.save_adapter(model, tmp_path / "a.safetensors")
    base_path = save_state_dict(base, tmp_path / "base.pth")
    adapter = peft.read_adapter(path)

    report = merge(base_path, path, tmp_path / "aware" / "m.pth")
    assert report.quant == {"trained": kind, "applied": kind, "how": "recorded in the adapter"}
    assert report.merged_into.startswith(f"dequant({kind}(W))") and "--quant none" in report.notes[-1]
    assert report.verification["checked"] and report.verification["max_abs_diff"] < 1e-4
    got = torch.load(tmp_path / "aware" / "m.pth", weights_only=True)
    want = peft.merge(base, adapter, quant=kind)
    assert all(torch.equal(got[k], want[k]) for k in want)

    report = merge(base_path, path, tmp_path / "full" / "m.pth", quant="none")
    assert report.quant["applied"] == "none" and report.merged_into == "the original full-precision base weights"
    got = torch.load(tmp_path / "full" / "m.pth", weights_only=True)
    want = peft.merge(base, adapter)
    assert all(torch.equal(got[k], want[k]) for k in want)

    other = "nf4" if kind == "int8" else "int8"
    with pytest.raises(ConfigError, match=f"--quant {other} but the adapter was trained with quant = {kind}"):
        merge(base_path, path, tmp_path / "x.pth", quant=other)


def test_default_quant_merge_without_bitsandbytes_says_what_to_do(tmp_path, monkeypatch):
    from rwkv_tune import quant
    from rwkv_tune.checkpoint import save_state_dict
    from rwkv_tune.merge import merge

    base = base_sd(7)
    model = fresh(base)
    peft.apply(model, {"name": "lora", "r": 8, "quant": "nf4"})
    path = peft.save_adapter(model, tmp_path / "a.safetensors")
    base_path = save_state_dict(base, tmp_path / "base.pth")

    def missing(kind):
        raise ConfigError(f"quant = {kind} needs bitsandbytes, which does not load (no module)", "pip install it.")

    monkeypatch.setattr(quant, "require_bitsandbytes", missing)
    with pytest.raises(ConfigError, match=r"trained on an nf4 base; merging into the weights it saw, "
                                          r"dequant\(nf4\(W\)\), needs bitsandbytes.*or pass --quant none"):
        merge(base_path, path, tmp_path / "m.pth")
    assert not (tmp_path / "m.pth").exists()
    assert merge(base_path, path, tmp_path / "m.pth", quant="none").quant["applied"] == "none"
