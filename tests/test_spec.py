"""Architecture detection from state dicts, and every refusal's one-line message."""

import pytest
import torch

from rwkv_tune import detect
from rwkv_tune.errors import UnsupportedModelError
from rwkv_tune.spec import detect_from_shapes, expected_shapes
from rwkv_tune.testing import make_state_dict


@pytest.mark.parametrize("version", [5, 6, 7])
@pytest.mark.parametrize("n_layer,n_embd,head_size", [(1, 64, 32), (2, 128, 64), (3, 192, 64), (4, 256, 32)])
def test_detects_every_dimension(version, n_layer, n_embd, head_size):
    sd = make_state_dict(version, n_layer, n_embd, vocab_size=300, head_size=head_size, layer0_v=False)
    spec = detect(sd)
    assert (spec.version, spec.n_layer, spec.n_embd, spec.head_size) == (version, n_layer, n_embd, head_size)
    assert spec.n_head == n_embd // head_size
    assert spec.vocab_size == 300
    assert spec.dim_ffn == sd["blocks.0.ffn.key.weight"].shape[0]
    assert spec.params == sum(t.numel() for t in sd.values())
    assert spec.dtype == "float32"
    assert spec.time_state is False


def test_v7_low_rank_dims_come_from_shapes_not_formulas():
    dims = {"w": 40, "a": 48, "v": 24, "g": 56}
    spec = detect(make_state_dict(7, 2, 128, lora_dims=dims))
    assert spec.lora_dims == dims


def test_v6_low_rank_dims():
    spec = detect(make_state_dict(6, 2, 128, lora_dims={"maa": 16, "decay": 48}))
    assert spec.lora_dims == {"maa": 16, "decay": 48}


@pytest.mark.parametrize("layer0_v", [True, False])
def test_v7_layer0_value_residual_keys_are_optional(layer0_v):
    sd = make_state_dict(7, 2, 128, layer0_v=layer0_v)
    assert ("blocks.0.att.v1" in sd) is layer0_v
    assert detect(sd).layer0_v is layer0_v


def test_time_state_and_dtype_and_wrapper_prefix():
    sd = make_state_dict(6, 2, 128, time_state=True, dtype=torch.bfloat16)
    spec = detect({"_forward_module." + k: v for k, v in sd.items()})
    assert spec.time_state and spec.dtype == "bfloat16"


def test_released_parameter_counts_and_size_names():
    # rwkv-architecture.md §6: v7 0.4B is 450,834,432 parameters (BlinkDL's own number).
    shapes = expected_shapes(7, 24, 1024, 64, 65536, 4096, {"w": 64, "a": 64, "v": 32, "g": 128}, layer0_v=True)
    spec = detect_from_shapes(shapes)
    assert spec.params == 450_834_432 and spec.size_name == "0.4B"
    shapes = expected_shapes(6, 24, 2048, 64, 65536, 7168, {"maa": 32, "decay": 64})
    assert detect_from_shapes(shapes).params == 1_599_873_024
    assert detect_from_shapes(expected_shapes(5, 32, 4096, 64, 65536, 14336, {})).params == 7_518_044_160


def _refusal(sd) -> str:
    with pytest.raises(UnsupportedModelError) as info:
        detect(sd)
    message = info.value.one_line()
    assert "\n" not in message
    return message


def test_refuses_non_tensor_entries():
    assert "not a tensor" in _refusal({"emb.weight": torch.zeros(2, 2), "note": "hello"})


def test_refuses_hf_format():
    assert "Hugging Face" in _refusal({"model.layers.0.attn.weight": torch.zeros(2, 2)})


def test_refuses_pip_converted_files():
    sd = make_state_dict(7, 2, 128)
    sd["_strategy"] = torch.zeros(1)
    assert "converted by the `rwkv` pip package" in _refusal(sd)


def test_refuses_rwkv4():
    sd = {"emb.weight": torch.zeros(10, 8), "head.weight": torch.zeros(10, 8), "blocks.0.ln1.weight": torch.zeros(8),
          "blocks.0.att.time_first": torch.zeros(8)}
    assert "RWKV-4" in _refusal(sd)


def test_refuses_v5_legacy():
    sd = make_state_dict(5, 2, 128)
    del sd["blocks.0.att.gate.weight"]
    assert "5.0/5.1" in _refusal(sd)


@pytest.mark.parametrize("variant,name", [("7a", "RWKV-7a DeepEmbed"), ("7b", "RWKV-7b DeepEmbed Attention")])
def test_detects_deep_embed_variants(variant, name):
    sd = make_state_dict(7, 2, 64, vocab_size=300, head_size=32, variant=variant)
    spec = detect(sd)
    assert (spec.version, spec.variant, spec.variant_name, spec.arch) == (7, variant, name, "x070")
    assert spec.params == sum(t.numel() for t in sd.values())
    assert spec.to_dict()["variant_name"] == name
    assert sd["blocks.1.ffn.s_emb.weight"].shape == (300, 1024)
    assert ("blocks.1.qkv.v_emb.weight" in sd) == (variant == "7b")


def test_plain_v7_has_no_variant():
    assert detect(make_state_dict(7, 2, 64, head_size=32)).variant == ""


def test_7b_with_qkv_keys_removed_is_refused_as_7b_not_loaded_as_7a():
    sd = make_state_dict(7, 2, 64, vocab_size=300, head_size=32, variant="7b")
    del sd["blocks.1.qkv.k_emb.weight"], sd["blocks.0.qkv.lnv.bias"]
    message = _refusal(sd)
    assert "7b" in message and "2 missing key(s)" in message and "blocks.0.qkv.lnv.bias" in message


def test_7b_with_all_deep_embed_ffn_keys_removed_is_refused():
    sd = {k: v for k, v in make_state_dict(7, 2, 64, head_size=32, variant="7b").items()
          if not k.split(".")[-1].startswith("s") and ".s_emb" not in k}
    assert "7b with missing keys" in _refusal(sd)


def test_7a_with_a_table_missing_is_refused():
    sd = make_state_dict(7, 2, 64, vocab_size=300, head_size=32, variant="7a")
    del sd["blocks.1.ffn.s_emb_x.weight"]
    assert "7a" in _refusal(sd) and "blocks.1.ffn.s_emb_x.weight" in _refusal(sd)


def test_deep_embed_keys_on_v6_are_refused():
    sd = make_state_dict(6, 2, 64, head_size=32)
    sd["blocks.0.ffn.s_emb.weight"] = torch.zeros(4, 4)
    assert "RWKV-7 DeepEmbed keys" in _refusal(sd)


def test_refuses_missing_layer():
    sd = {k: v for k, v in make_state_dict(7, 3, 64).items() if not k.startswith("blocks.1.")}
    assert "missing layer(s) [1]" in _refusal(sd)


def test_refuses_extra_layer_keys():
    sd = make_state_dict(7, 2, 64)
    sd["blocks.5.att.key.weight"] = torch.zeros(64, 64)
    assert "layer(s) [5]" in _refusal(sd)


def test_refuses_wrong_shape_naming_key_expected_and_actual():
    sd = make_state_dict(7, 2, 128)
    sd["blocks.1.att.key.weight"] = torch.zeros(128, 64)
    message = _refusal(sd)
    assert "blocks.1.att.key.weight" in message and "[128, 64]" in message and "[128, 128]" in message


def test_refuses_missing_and_unexpected_keys():
    sd = make_state_dict(6, 2, 64)
    del sd["blocks.1.att.time_decay_w2"]
    assert "blocks.1.att.time_decay_w2" in _refusal(sd)
    sd = make_state_dict(6, 2, 64)
    sd["blocks.1.att.key.lora_A"] = torch.zeros(4, 64)
    assert "lora_A" in _refusal(sd) and "merge" in _refusal(sd)


def test_refuses_adapter_file():
    assert "adapter" in _refusal({"blocks.0.att.key.lora_A": torch.zeros(4, 8), "blocks.0.att.key.lora_B": torch.zeros(8, 4)})
