"""`method.load`: training starts from an adapter file (ours or a Hugging Face peft folder) and keeps learning."""

import pytest

from rwkv_tune.errors import ConfigError
from rwkv_tune.preset import from_dict
from rwkv_tune.runs import read_events
from rwkv_tune.train import run


def step_losses(run_dir):
    return [e["loss"] for e in read_events(run_dir / "metrics.jsonl") if e["event"] == "step"]


def test_training_starts_from_a_peft_folder(train_setup, tmp_path):
    _, _, raw = train_setup(7, "lora", epoch_steps=8, epoch_count=1, lr_init=1e-2, lr_final=1e-2)
    raw["method"]["train_parts"] = []
    raw["output"]["export"] = "peft"
    first = run(from_dict(raw))
    first_losses = step_losses(tmp_path / "run")

    again = {**raw, "method": {"name": "lora", "r": 64, "load": str(first.adapter.parent / "peft")},
             "output": {"dir": str(tmp_path / "again")}}
    run(from_dict(again))
    again_losses = step_losses(tmp_path / "again")
    # the second run starts where the first ended, not at the base model's loss
    assert again_losses[0] < first_losses[0] - 0.5 * (first_losses[0] - first_losses[-1]), (first_losses, again_losses)
    assert read_events(tmp_path / "again" / "metrics.jsonl")[0]["plan"]["trainable_params"] == \
        read_events(tmp_path / "run" / "metrics.jsonl")[0]["plan"]["trainable_params"]  # r from the file, not 64


def test_method_load_refuses_another_method_and_quantized_bases(train_setup, tmp_path):
    _, _, raw = train_setup(7, "lora", epoch_steps=2, epoch_count=1)
    first = run(from_dict(raw))
    with pytest.raises(ConfigError, match="is a lora adapter, but method.name = pissa"):
        run(from_dict({**raw, "method": {"name": "pissa", "load": str(first.adapter)},
                       "output": {"dir": str(tmp_path / "b")}}))
    with pytest.raises(ConfigError, match="method.load with quant = nf4"):
        from_dict({**raw, "quant": "nf4", "method": {"name": "lora", "load": str(first.adapter)}})
