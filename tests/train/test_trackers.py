"""Trackers for real: TensorBoard event files read back with TensorBoard's own reader, wandb offline.

A tracker that raises becomes a warning event and training goes on; wandb is finished however the run ends.
"""

import pytest
import torch

from rwkv_tune.preset import from_dict
from rwkv_tune.runs import RunDir, read_events
from rwkv_tune.train import run

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
wandb = pytest.importorskip("wandb")


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb-dir").mkdir()
    yield
    if wandb.run is not None:  # a test that fails must not leave a run open for the next one
        wandb.run.finish()


def scalars(run_dir, tag):
    acc = event_accumulator.EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []


def warnings_of(run_dir):
    return [e["message"] for e in read_events(RunDir(run_dir).metrics)
            if e["event"] == "warning" and ("wandb" in e["message"] or "tensorboard" in e["message"])]


def test_tensorboard_gets_every_step_loss(train_setup, tmp_path):
    _, _, raw = train_setup(7, "lora", epoch_steps=3, epoch_count=1)
    raw["output"]["tensorboard"] = True
    result = run(from_dict(raw))
    logged = scalars(tmp_path / "run", "step/loss")
    assert [step for step, _ in logged] == [1, 2, 3]
    assert [value for _, value in logged] == pytest.approx(result.losses, rel=1e-5)
    assert {"step/lr", "step/grad_norm"} <= set(event_accumulator.EventAccumulator(
        str(tmp_path / "run" / "tensorboard")).Reload().Tags()["scalars"])


def test_a_tensorboard_that_raises_is_a_warning_and_training_goes_on(train_setup, tmp_path, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    real_add_scalar = SummaryWriter.add_scalar

    def add_scalar(self, tag, value, step):
        if step == 2:
            raise OSError(28, "No space left on device")
        return real_add_scalar(self, tag, value, step)

    monkeypatch.setattr(SummaryWriter, "add_scalar", add_scalar)
    _, _, raw = train_setup(7, "lora", epoch_steps=4, epoch_count=1)
    raw["output"]["tensorboard"] = True
    result = run(from_dict(raw))
    assert result.reason == "finished" and result.step == 4
    messages = warnings_of(tmp_path / "run")
    assert len(messages) == 1 and messages[0].startswith("tensorboard failed at a step event (OSError")
    assert "training continues" in messages[0]
    assert [step for step, _ in scalars(tmp_path / "run", "step/loss")] == [1]


def test_wandb_offline_logs_and_finishes(train_setup, tmp_path, offline_wandb):
    _, _, raw = train_setup(7, "lora", epoch_steps=3, epoch_count=1)
    raw["output"]["wandb"] = "rwkv-tune-tests"
    run(from_dict(raw))
    assert wandb.run is None  # finished
    offline = list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 1 and offline[0].stat().st_size > 0
    assert warnings_of(tmp_path / "run") == []


def test_wandb_is_finished_when_training_fails(train_setup, tmp_path, offline_wandb, monkeypatch):
    from rwkv_tune.train.loop import Trainer

    real_step = Trainer.train_step

    def failing_step(self):
        if self.step == 2:
            raise RuntimeError("a bug in step 3")
        return real_step(self)

    monkeypatch.setattr(Trainer, "train_step", failing_step)
    _, _, raw = train_setup(7, "lora", epoch_steps=5, epoch_count=1)
    raw["output"]["wandb"] = "rwkv-tune-tests"
    with pytest.raises(RuntimeError, match="a bug in step 3"):
        run(from_dict(raw))
    assert wandb.run is None


def test_a_wandb_that_raises_is_a_warning_is_finished_and_training_goes_on(train_setup, tmp_path, offline_wandb,
                                                                           monkeypatch):
    finished = []
    real_finish = wandb.sdk.wandb_run.Run.finish

    def log(self, values, step=None, **kwargs):
        raise ConnectionError("wandb server unreachable")

    def finish(self, *args, **kwargs):
        finished.append(kwargs.get("exit_code"))
        return real_finish(self, *args, **kwargs)

    monkeypatch.setattr(wandb.sdk.wandb_run.Run, "log", log)
    monkeypatch.setattr(wandb.sdk.wandb_run.Run, "finish", finish)
    _, _, raw = train_setup(7, "lora", epoch_steps=3, epoch_count=1)
    raw["output"]["wandb"] = "rwkv-tune-tests"
    result = run(from_dict(raw))
    assert result.reason == "finished" and result.step == 3 and torch.isfinite(torch.tensor(result.losses)).all()
    messages = warnings_of(tmp_path / "run")
    assert len(messages) == 1 and "wandb failed at a step event (ConnectionError: wandb server unreachable)" in messages[0]
    assert finished == [1] and wandb.run is None
