"""PeftConfig: the preset's method section, validated with one-line ConfigErrors; names and targets."""

import pytest

from rwkv_tune.errors import ConfigError
from rwkv_tune.peft import PeftConfig, get_method, parse_layers


@pytest.mark.parametrize("name,mode", [("disha", "bone"), ("bone", "bone"), ("bat", "bat"), ("miss", "bone")])
def test_aliases_are_one_method_with_the_canonical_name(name, mode):
    cfg = PeftConfig.from_dict({"name": name, "r": 16})
    assert cfg.name == "miss" and cfg.mode == mode
    assert cfg.to_dict()["name"] == "miss"
    assert type(get_method(name)) is type(get_method("miss"))


def test_conflicting_alias_and_mode():
    with pytest.raises(ConfigError, match="means mode bat"):
        PeftConfig.from_dict({"name": "bat", "mode": "mini"})
    # the preset always carries mode: bone (its default); name: bat still means bat
    assert PeftConfig.from_dict({"name": "bat", "mode": "bone"}).mode == "bat"


def test_trainer_style_full_section_is_accepted():
    section = {"name": "pissa", "r": 8, "alpha": 32.0, "dropout": 0.0, "rslora": False, "mode": "bone",
               "mini_r": None, "svd_niter": 2, "train_parts": ["time", "ln"], "targets": None, "layers": None,
               "quant": "none"}
    cfg = PeftConfig.from_dict(section)
    assert cfg.to_dict() == {"name": "pissa", "r": 8, "svd_niter": 2, "targets": None, "train_parts": ["time", "ln"],
                             "layers": None, "quant": "none"}
    assert PeftConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("raw,match", [
    ({"name": "lorra"}, "Did you mean 'lora'"),
    ({"name": "lora", "rank": 8}, "method.rank is not a method setting"),
    ({"name": "lora", "r": 0}, "method.r = 0 is below the minimum 1"),
    ({"name": "lora", "r": "8"}, "not a whole number"),
    ({"name": "lora", "alpha": 0}, "method.alpha = 0.0 must be above 0"),
    ({"name": "lora", "dropout": 1.5}, "method.dropout"),
    ({"name": "miss", "mode": "boon"}, "method.mode = 'boon' is not one of bone, bat, mini"),
    ({"name": "lora", "targets": ["att.kee"]}, "Did you mean 'att.key'"),
    ({"name": "lora", "train_parts": ["norm"]}, "method.train_parts has 'norm'"),
    ({"name": "lora", "quant": "int4"}, "quant = 'int4'"),
    ({"name": "full", "quant": "nf4"}, "method full trains them"),
    ({"name": "bat", "dropout": 0.1}, "does not apply to mode bat"),
    ({"name": "lora", "layers": "5-2"}, "backwards range"),
])
def test_bad_values_are_one_line_errors(raw, match):
    with pytest.raises(ConfigError, match=match) as info:
        PeftConfig.from_dict(raw)
    assert "\n" not in str(info.value)


def test_layers_parse():
    assert parse_layers("12-15") == (12, 13, 14, 15)
    assert parse_layers("0, 3,5-6") == (0, 3, 5, 6)
    assert parse_layers([3, 1]) == (1, 3)
    assert parse_layers(None) is None
    with pytest.raises(ConfigError, match="has 2 layers"):
        parse_layers("1-2", n_layer=2)


def test_targets_shorthand_and_scale():
    cfg = PeftConfig.from_dict({"name": "lora", "targets": ["ffn"], "r": 16, "alpha": 32})
    assert cfg.targets == ("ffn",)
    assert cfg.scale == 2.0
    assert PeftConfig.from_dict({"name": "lora", "r": 16, "alpha": 32, "rslora": True}).scale == 8.0
    assert PeftConfig.from_dict({"name": "pissa", "alpha": 99}).scale == 1.0


def test_default_train_parts_and_off():
    assert PeftConfig.from_dict({"name": "lora"}).parts == ("time", "ln")
    assert PeftConfig.from_dict({"name": "lora", "train_parts": []}).parts == ()
    assert PeftConfig.from_dict({"name": "state", "train_parts": ["time", "ln"]}).parts == ()
