"""Exact resume: a run killed with SIGKILL and resumed with --resume auto ends with the same adapter."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from rwkv_tune.preset import from_dict
from rwkv_tune.runs import read_events
from rwkv_tune.train import run


@pytest.mark.parametrize("method", ["lora", "pissa"])
def test_sigkill_and_resume_gives_the_same_adapter(train_setup, tmp_path, method):
    _, _, raw = train_setup(7, method, save_every_steps=2, epoch_steps=6, epoch_count=2, lr_init=1e-2,
                            lr_final=3e-3, warmup_steps=2)
    reference = run(from_dict({**raw, "output": {"dir": str(tmp_path / "reference")}}))

    preset = tmp_path / "killed.yaml"
    preset.write_text(yaml.safe_dump({**raw, "output": {"dir": str(tmp_path / "killed")}}))
    kill_after = random.Random(method).randint(3, 9)
    proc = subprocess.Popen([sys.executable, "-m", "rwkv_tune.train.worker", str(preset), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if any(e["event"] == "step" and e["step"] >= kill_after for e in read_events(metrics)):
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]

    resumed = run(from_dict({**raw, "output": {"dir": str(tmp_path / "killed")}}), resume="auto")
    assert resumed.step == reference.step == 12
    assert max(abs(a - b) for a, b in zip(resumed.losses, reference.losses, strict=True)) <= 1e-6
    ours, theirs = load_file(resumed.adapter), load_file(reference.adapter)
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.allclose(ours[key], theirs[key], atol=1e-6, rtol=0), key
    starts = [e for e in read_events(metrics) if e["event"] == "run_start"]
    assert len(starts) == 2 and starts[1]["resumed_from_step"] >= 2
