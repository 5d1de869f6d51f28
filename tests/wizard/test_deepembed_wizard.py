"""The wizard on RWKV-7a/7b files: says which variant, records it in the preset, and its estimate counts the tables."""

import pytest

from rwkv_tune import wizard
from rwkv_tune.preset import check_against_spec, from_dict


@pytest.mark.parametrize("variant,name", [("7a", "RWKV-7a DeepEmbed"), ("7b", "RWKV-7b DeepEmbed Attention")])
def test_wizard_names_the_variant_and_records_it(tiny_model, variant, name):
    path = tiny_model(7, n_layer=2, n_embd=64, head_size=32, vocab_size=300, variant=variant)
    s = wizard.answer(wizard.State(), "model", str(path))
    assert name in wizard.describe_spec(s.spec)
    raw = wizard.to_raw(s)
    assert raw["model"]["spec"]["variant"] == variant
    preset = from_dict(raw)
    check_against_spec(preset, s.spec)  # the recorded variant matches the file
    plain = wizard.answer(wizard.State(), "model", str(tiny_model(7, n_layer=2, n_embd=64, head_size=32,
                                                                  vocab_size=300)))
    with pytest.raises(Exception, match="variant"):
        check_against_spec(preset, plain.spec)
