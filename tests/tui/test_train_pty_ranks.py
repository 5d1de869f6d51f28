"""`rwkv-tune train` with `devices: 2` (two DeepSpeed CPU ranks) in a real pseudo-terminal: the same dashboard
(rank 0's events, the world size in the header), q → s stops and saves on both ranks, `watch` attaches."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest
import yaml

pexpect = pytest.importorskip("pexpect")
pytest.importorskip("deepspeed")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")]


def two_rank_preset(root: Path) -> Path:
    from rwkv_tune.data import write_binidx
    from rwkv_tune.testing import make_model

    model = make_model(root / "base.pth", version=7, n_layer=2, n_embd=64, head_size=32, vocab_size=200)
    write_binidx(root / "corpus", [[(start + i) % 190 + 5 for i in range(40)] + [0] for start in range(0, 190, 6)])
    preset = {
        "model": {"path": str(model)},
        "method": {"name": "lora", "r": 8, "alpha": 16},
        "data": {"path": str(root / "corpus"), "ctx_len": 32, "dataload": "pad"},
        "train": {"micro_bsz": 2, "epoch_steps": STEPS, "epoch_count": 1, "lr_init": 1e-3, "lr_final": 1e-3,
                  "precision": "fp32", "grad_cp": False, "device": "cpu", "seed": 1,
                  "devices": 2, "strategy": "deepspeed_stage_2"},  # long enough to be stopped mid-run
        "output": {"dir": str(root / "run")},
    }
    path = root / "preset.yaml"
    path.write_text(yaml.safe_dump(preset), encoding="utf-8")
    return path


STEPS = 20_000  # the run cannot end by itself before q → s, however fast the machine


def spawn(*args: str, cwd: Path):
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "200", "LINES": "30"}
    env.pop("RWKV_TUNE_NO_TUI", None)
    child = pexpect.spawn(sys.executable, ["-m", "rwkv_tune", *args], cwd=str(cwd), env=env, dimensions=(30, 200),
                          timeout=120)
    child.logfile_read = io.BytesIO()
    return child


def test_two_ranks_show_the_dashboard_and_q_s_stops_and_saves_both(tmp_path):
    train = spawn("train", str(two_rank_preset(tmp_path)), cwd=tmp_path)
    try:
        train.expect(b"RUNNING", timeout=180)
        train.expect(b"\xc3\x972 ranks", timeout=60)  # the header's devices: cpu ×2 ranks (a wide terminal: the tmp path is long)
        train.expect(rb"step \d+/", timeout=180)  # rank 0's step events reach the dashboard
        train.send("q")
        train.expect(b"Stop and save", timeout=30)
        train.send("s")
        train.expect(pexpect.EOF, timeout=180)
    finally:
        train.close(force=True)
    screen = train.logfile_read.getvalue().decode("utf-8", errors="replace")
    assert train.exitstatus == 0, screen[-3000:]
    run = tmp_path / "run"
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    done = [e for e in events if e["event"] == "done"]
    assert len(done) == 1 and done[0]["reason"] == "stopped" and done[0]["step"] < STEPS
    assert next(e for e in events if e["event"] == "run_start")["plan"]["world_size"] == 2
    checkpoint = run / "checkpoints" / f"step-{done[0]['step']:08d}"
    assert (checkpoint / "complete").exists()
    shards = sorted(p.name for p in (checkpoint / "deepspeed" / "state").glob("*optim_states.pt"))
    assert len(shards) == 2, shards  # both ranks stopped at the same step and saved their ZeRO shards

    watch = spawn("watch", str(run), cwd=tmp_path)
    try:
        watch.expect(b"STOPPED", timeout=60)
        watch.send("q")
        watch.expect(pexpect.EOF, timeout=30)
    finally:
        watch.close(force=True)
