"""SFT straight from a local Hugging Face dataset trains, with the prompt masked out of the loss."""

import pytest

from rwkv_tune.preset import from_dict
from rwkv_tune.runs import read_events
from rwkv_tune.testing import make_model
from rwkv_tune.train import run
from rwkv_tune.train.loop import Trainer


def test_saved_hf_dataset_trains_with_the_prompt_masked(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = {"query": [f"What is {i} plus {i}?" for i in range(16)],
            "response": [f"It is {2 * i}." for i in range(16)]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "math"))
    model = make_model(tmp_path / "m.pth", version=7, n_layer=1, n_embd=64, head_size=32, vocab_size=65536)
    raw = {"model": {"path": str(model)}, "method": {"name": "lora", "r": 4},
           "data": {"path": str(tmp_path / "math"), "type": "sft", "fields": ["query", "response"],
                    "split": "train[:12]", "loss_mask": "sft", "ctx_len": 32},
           "train": {"micro_bsz": 4, "epoch_steps": 3, "epoch_count": 1, "lr_init": 1e-2, "lr_final": 1e-2,
                     "precision": "fp32", "grad_cp": False, "device": "cpu"},
           "output": {"dir": str(tmp_path / "run")}}
    trainer = Trainer(from_dict(raw))
    trainer.setup()
    x, y = next(trainer.batches)
    learned = (y != -100).sum(dim=1)
    assert ((learned > 0) & (learned < (x != 0).sum(dim=1) // 2)).all()  # only the short answers carry loss
    trainer.events.close()

    result = run(from_dict({**raw, "output": {"dir": str(tmp_path / "run2")}}))
    assert result.reason == "finished" and result.step == 3
    steps = [e for e in read_events(tmp_path / "run2" / "metrics.jsonl") if e["event"] == "step"]
    assert len(steps) == 3 and all(e["loss"] > 0 for e in steps)
