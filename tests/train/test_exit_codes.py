"""Exit codes of `rwkv-tune train --no-tui`: 130 on SIGINT, 143 on SIGTERM (each after a checkpoint),
3 when the disk is full, and a user error printed once."""

import errno
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from typer.testing import CliRunner

from rwkv_tune import exit_codes
from rwkv_tune.cli import app
from rwkv_tune.runs import RunDir, read_events


def write_preset(tmp_path, raw) -> str:
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_a_checkpoint_and_exits_with_its_code(train_setup, tmp_path, signum, code):
    _, _, raw = train_setup(7, "lora", epoch_steps=100_000, epoch_count=1)
    preset = write_preset(tmp_path, raw)
    rundir = RunDir(tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "-m", "rwkv_tune", "train", preset, "--no-tui"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"})
    deadline = time.time() + 120
    while not any(e["event"] == "step" for e in read_events(rundir.metrics)):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0].decode()
        time.sleep(0.2)
    proc.send_signal(signum)
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == code, output
    done = read_events(rundir.metrics)[-1]
    assert done["event"] == "done" and done["reason"] == "interrupted"
    assert rundir.latest_checkpoint() is not None and rundir.latest_checkpoint().name == f"step-{done['step']:08d}"


def test_exit_codes_for_run_reasons():
    assert exit_codes.for_run("finished") == 0 and exit_codes.for_run("stopped") == 0
    assert exit_codes.for_run("diverged") == 1
    assert exit_codes.for_run("interrupted", signal.SIGINT) == 130 and exit_codes.for_run("interrupted") == 130
    assert exit_codes.for_run("interrupted", signal.SIGTERM) == 143 and exit_codes.for_run("terminated") == 143


def test_disk_full_exits_3_with_one_line(train_setup, tmp_path, monkeypatch):
    from rwkv_tune.train import checkpointing

    _, _, raw = train_setup(7, "lora", save_every_steps=2)
    real_save = torch.save

    def save(obj, path, *a, **k):
        if "step-00000004" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(checkpointing.torch, "save", save)
    result = CliRunner().invoke(app, ["train", write_preset(tmp_path, raw), "--no-tui"])
    assert result.exit_code == 3, result.output
    assert "disk full while saving the checkpoint of step 4" in result.output
    assert result.output.count("disk full") == 1 and "Traceback" not in result.output


def test_a_wrong_model_path_is_reported_once(train_setup, tmp_path):
    _, _, raw = train_setup(7, "lora")
    raw["model"]["path"] = str(tmp_path / "missing.pth")
    proc = subprocess.run([sys.executable, "-m", "rwkv_tune", "train", write_preset(tmp_path, raw), "--no-tui"],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "300"}, timeout=120)
    assert proc.returncode == 2
    both = proc.stdout + proc.stderr
    assert both.count("missing.pth does not exist") == 1, both
    assert "Traceback" not in both


def test_out_of_memory_exits_3(train_setup, tmp_path, monkeypatch):
    from rwkv_tune.train.loop import Trainer

    def boom(self):
        raise torch.OutOfMemoryError("CUDA out of memory")

    _, _, raw = train_setup(7, "lora")
    monkeypatch.setattr(Trainer, "train_step", boom)
    result = CliRunner().invoke(app, ["train", write_preset(tmp_path, raw), "--no-tui"])
    assert result.exit_code == 3 and "out of GPU memory at step 1" in result.output
