"""The trainer on RWKV-7a / 7b: learns, merges at the end (verified), and infctx carries 7b's attention cache."""

import pytest

from rwkv_tune.model import load_model
from rwkv_tune.preset import from_dict
from rwkv_tune.testing import make_model
from rwkv_tune.train import run
from rwkv_tune.train.finish import merge_run

VOCAB = 200  # as tests/train/conftest.py


def learned(losses: list[float]) -> bool:
    return sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05


@pytest.mark.parametrize("variant,overrides", [("7a", {}), ("7b", {"train_type": "infctx", "chunk_ctx": 16})])
def test_lora_learns_and_merges(train_setup, tmp_path, variant, overrides, one_thread):
    _, _, raw = train_setup(7, "lora", lr_init=1e-2, lr_final=3e-3, **overrides)
    raw["model"]["path"] = str(make_model(tmp_path / f"{variant}.pth", 7, n_layer=2, n_embd=64, head_size=32,
                                          vocab_size=VOCAB, variant=variant))
    raw["method"]["targets"] = ["att", "ffn", "ffn.s_emb_x"]
    raw["method"]["train_parts"] = ["ln", "deepembed"]
    preset = from_dict(raw)
    result = run(preset)
    assert result.reason == "finished" and learned(result.losses), result.losses
    report = merge_run(preset)  # what `rwkv-tune train` does at the end with output.merge: verified
    assert report.verification["checked"] is True
    assert load_model(tmp_path / "run" / "merged.pth").spec.variant == variant
