"""Runs that used to hang or mislead: a loss mask with nothing to learn, stop while batches are skipped,
explicit WKV ops that cannot run, and out-of-memory outside the training step (issue 14)."""

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from rwkv_tune.errors import ConfigError, DataError, UserError
from rwkv_tune.preset import from_dict
from rwkv_tune.runs import RunDir, read_events
from rwkv_tune.testing import make_model
from rwkv_tune.train import run


def plain_text_setup(tmp_path, loss_mask="qa"):
    """A real-vocab tiny model and a .txt file of plain prose (no User:/Assistant: markers)."""
    model = make_model(tmp_path / "base.pth", version=7, n_layer=1, n_embd=32, head_size=32, vocab_size=65536)
    text = tmp_path / "story.txt"
    text.write_text("\n\n".join(f"Once upon a time there was a village number {i}. It rained." for i in range(30)))
    return {"model": {"path": str(model)}, "method": {"name": "lora", "r": 4, "alpha": 4},
            "data": {"path": str(text), "ctx_len": 32, "dataload": "pad", "loss_mask": loss_mask},
            "train": {"micro_bsz": 2, "epoch_steps": 3, "epoch_count": 1, "precision": "fp32", "grad_cp": False,
                      "device": "cpu"},
            "output": {"dir": str(tmp_path / "run")}}


def test_qa_mask_on_plain_text_is_refused_before_training(tmp_path):
    raw = plain_text_setup(tmp_path)
    with pytest.raises(DataError) as info:
        run(from_dict(raw))
    message = info.value.one_line()
    assert "loss_mask qa" in message and "story.txt" in message
    assert "no 'User:'/'Assistant:' markers in the first 30 documents" in message and "loss_mask: pad" in message
    assert not any(e["event"] == "step" for e in read_events(RunDir(tmp_path / "run").metrics))


def test_cli_train_qa_on_plain_text_exits_2_quickly(tmp_path):
    raw = plain_text_setup(tmp_path, loss_mask="sft")
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = subprocess.run([sys.executable, "-m", "rwkv_tune", "train", str(path), "--no-tui"], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)  # today's main never returns
    assert out.returncode == 2, out.stdout + out.stderr
    assert "loss_mask sft" in out.stdout + out.stderr and "Traceback" not in out.stderr


def test_stop_works_while_every_batch_is_skipped(train_setup, monkeypatch):
    from rwkv_tune.train.loop import Trainer

    _, _, raw = train_setup(7, "lora")
    preset = from_dict(raw)
    real_setup = Trainer.setup

    class EmptyBatches:
        """Batches with no target at all; gives up if the trainer never looks at the control file."""

        def __init__(self):
            self.calls = 0

        def __next__(self):
            self.calls += 1
            if self.calls == 3:
                RunDir(Path(preset.output.dir)).control.write_text("stop")
            if self.calls > 500:
                raise AssertionError("the control file was never polled while batches were skipped")
            return torch.zeros(4, 16, dtype=torch.long), torch.full((4, 16), -100)

        def state_dict(self):
            return {}

        def warnings(self):
            return []

    def setup(self):
        real_setup(self)
        self.batches = EmptyBatches()

    monkeypatch.setattr(Trainer, "setup", setup)
    result = run(preset)
    assert result.reason == "stopped" and result.step == 0


@pytest.mark.parametrize("op", ["cuda", "fla"])
def test_explicit_op_that_cannot_run_is_refused_with_the_reason(train_setup, tmp_path, op):
    _, _, raw = train_setup(7, "lora", op=op, precision="bf16")
    raw["model"]["path"] = str(make_model(tmp_path / "h64.pth", n_layer=1, n_embd=64, head_size=64, vocab_size=200))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no silent fallback with a Python warning
        with pytest.raises(ConfigError) as info:
            run(from_dict(raw))
    message = info.value.one_line()
    assert f"train.op = {op} cannot run here" in message and "device is cpu" in message
    assert "train.op: auto" in message
    assert not any(e["event"] == "step" for e in read_events(RunDir(Path(raw["output"]["dir"])).metrics))


def test_auto_op_fallback_is_a_warning_event(train_setup, monkeypatch):
    from rwkv_tune.train import wkv_op

    class Model:
        spec = type("Spec", (), {"version": 7, "head_size": 64})()
        op = "cuda"

        def set_op(self, op):
            self.op = op

    monkeypatch.setattr(wkv_op, "op_problem", lambda *a, **k: "nvcc (the CUDA compiler) was not found")
    model = Model()
    note = wkv_op.settle_op(model, "auto", torch.device("cuda"), torch.bfloat16)
    assert model.op == "torch" and "nvcc" in note and "torch op" in note
    assert wkv_op.settle_op(Model(), "auto", torch.device("cpu"), torch.float32) is None

    _, _, raw = train_setup(7, "lora", epoch_steps=1, epoch_count=1)
    monkeypatch.setattr("rwkv_tune.train.loop.settle_op", lambda *a: "op auto: using the torch op (slower)")
    run(from_dict(raw))
    events = read_events(RunDir(Path(raw["output"]["dir"])).metrics)
    assert any(e["event"] == "warning" and "op auto" in e["message"] for e in events)


def test_progress_printer_shows_warning_events():
    from io import StringIO

    from rich.console import Console

    from rwkv_tune.progress import make_printer

    out = StringIO()
    make_printer(Console(file=out, width=200))({"event": "warning", "message": "op auto: using the torch op"})
    assert "warning: op auto: using the torch op" in out.getvalue()


@pytest.mark.parametrize("where", ["eval", "sample"])
def test_out_of_memory_in_eval_and_sampling_gives_the_advice(train_setup, monkeypatch, where):
    from rwkv_tune.model import RWKV

    _, data, raw = train_setup(7, "lora", micro_bsz=4, epoch_steps=2, epoch_count=1)
    if where == "eval":
        raw["data"].update({"eval_path": data, "eval_every": 1, "eval_batches": 1})
    else:
        raw["train"].update({"sample_every": 1, "sample_prompts": ["\x05\x06"], "sample_tokens": 2})
    real_hidden = RWKV.hidden

    def hidden(self, *args, **kwargs):
        if not self.training:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real_hidden(self, *args, **kwargs)

    monkeypatch.setattr(RWKV, "hidden", hidden)
    with pytest.raises(UserError) as info:
        run(from_dict(raw))
    message = info.value.one_line()
    during = "during eval" if where == "eval" else "while sampling"
    assert f"out of GPU memory {during} after step 1" in message and "micro_bsz 4→2" in message
    assert read_events(RunDir(Path(raw["output"]["dir"])).metrics)[-1]["event"] == "error"
