"""Preset validation: every message names the key, the value and the fix."""

import pytest
import yaml

from rwkv_tune.errors import ConfigError
from rwkv_tune.preset import apply_overrides, check_against_spec, dump, from_dict, load
from rwkv_tune.spec import detect
from rwkv_tune.testing import make_state_dict

BASE = {"model": {"path": "m.pth"}, "data": {"path": "d"}}


def error(raw) -> str:
    with pytest.raises(ConfigError) as info:
        from_dict(raw)
    message = info.value.one_line()
    assert "\n" not in message
    return message


def with_(section: str, **values):
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE.items()}
    raw[section] = {**raw.get(section, {}), **values}
    return raw


def test_defaults_are_valid_and_round_trip(tmp_path):
    p = from_dict(BASE)
    assert p.method.name == "lora" and p.train.micro_bsz == 1 and p.quant == "none"
    path = tmp_path / "p.yaml"
    path.write_text(dump(p))
    assert load(path).to_dict() == p.to_dict()


def test_unknown_key_suggests_the_closest():
    assert "unknown key 'train.lr_int'" in error(with_("train", lr_int=1e-4)) and "lr_init" in error(with_("train", lr_int=1))
    assert "Did you mean 'method'" in error({**BASE, "methd": {"name": "lora"}})


def test_wrong_type_and_range_and_choice():
    assert "train.micro_bsz = 'four' is not a whole number" in error(with_("train", micro_bsz="four"))
    assert "train.micro_bsz = 0 is below the minimum 1" in error(with_("train", micro_bsz=0))
    message = error(with_("method", name="lorra"))
    assert "method.name = 'lorra'" in message and "Did you mean 'lora'" in message
    assert "quant = 'nf5'" in error({**BASE, "quant": "nf5"})


@pytest.mark.parametrize("section,values,needle", [
    ("train", {"op": "cuda", "precision": "fp32"}, "train.op = cuda needs train.precision = bf16"),
    ("train", {"devices": 2}, "needs a DeepSpeed strategy"),
    ("train", {"train_type": "infctx", "chunk_ctx": 1024}, "must be smaller than data.ctx_len"),
    ("train", {"train_type": "infctx", "chunk_ctx": 300}, "not a multiple of train.chunk_ctx"),
    ("train", {"lr_init": 1e-5, "lr_final": 1e-4}, "lr_final = 0.0001 is above train.lr_init"),
    ("train", {"warmup_steps": 99999}, "warmup_steps = 99999 is not below"),
])
def test_cross_field_checks(section, values, needle):
    assert needle in error(with_(section, **values))


def test_state_tuning_needs_a_state_gradient_op():
    raw = with_("train", op="fla", precision="bf16")
    raw["method"] = {"name": "state"}
    assert "initial-state gradient" in error(raw)


def test_full_with_quant_and_only_with_batch():
    assert "method full trains them" in error({**BASE, "method": {"name": "full"}, "quant": "nf4"})
    raw = with_("data", dataload="only")
    raw["train"] = {"micro_bsz": 2}
    assert "micro_bsz must be 1" in error(raw)


def test_checks_against_the_model_spec():
    spec = detect(make_state_dict(7, 2, 64, head_size=32))
    p = from_dict({**BASE, "method": {"name": "bat", "r": 48}})
    with pytest.raises(ConfigError, match="divisible by method.r = 48"):
        check_against_spec(p, spec)
    p = from_dict({**BASE, "model": {"path": "m.pth", "spec": {"n_layer": 24}}})
    with pytest.raises(ConfigError, match="model.spec.n_layer = 24 in the preset"):
        check_against_spec(p, spec)
    p = from_dict({**BASE, "train": {"op": "cuda"}})
    with pytest.raises(ConfigError, match="head_size 64"):
        check_against_spec(p, spec)


def test_set_overrides_are_typed(tmp_path):
    raw = apply_overrides(BASE, ["train.lr_init=1e-4", "data.ctx_len=512", "method.train_parts=[ln]", "quant=int8"])
    p = from_dict(raw)
    assert p.train.lr_init == 1e-4 and p.data.ctx_len == 512 and p.method.train_parts == ["ln"] and p.quant == "int8"
    with pytest.raises(ConfigError, match="has no '='"):
        apply_overrides(BASE, ["train.lr_init"])


def test_bad_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  path: m.pth\n data: [\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load(path)
    assert yaml.safe_load("a: 1") == {"a": 1}


def test_missing_packages_are_checked_at_train_time_not_when_reading(monkeypatch):
    import importlib.util

    from rwkv_tune.preset import check_machine

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    p = from_dict({**BASE, "quant": "nf4"})  # reading an nf4 preset works anywhere
    with pytest.raises(ConfigError, match="quant = nf4 needs bitsandbytes"):
        check_machine(p)
