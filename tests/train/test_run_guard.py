"""One run directory, one writer (issue 14): the run lock, no second run mixed in, resume checks, safe trainer.pt."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from rwkv_tune.cli import app
from rwkv_tune.errors import UserError
from rwkv_tune.preset import from_dict
from rwkv_tune.runs import RunDir, read_events
from rwkv_tune.train import run
from rwkv_tune.train.run_guard import check_run_dir, claim_run
from rwkv_tune.train.run_lock import RunLock

ANSI = re.compile(r"\x1b\[[0-9;]*m")
TINY = {"micro_bsz": 2, "epoch_steps": 2, "epoch_count": 2, "save_every_steps": 1}


def tiny(train_setup, tmp_path, **train):
    """A 4-step run (ctx 16) and its preset file; returns (raw preset, preset path, run dir)."""
    _, _, raw = train_setup(7, "lora", **{**TINY, **train})
    raw["data"]["ctx_len"] = 16
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump(raw))
    return raw, path, RunDir(Path(raw["output"]["dir"]))


def cli(*args):
    result = CliRunner().invoke(app, ["train", *map(str, args), "--no-tui"])
    return result.exit_code, " ".join(ANSI.sub("", result.output).split())


def train_process(preset, *args):
    return subprocess.Popen([sys.executable, "-m", "rwkv_tune", "train", str(preset), "--no-tui", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "400"})


def wait_for(predicate, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_lock_refuses_a_second_holder_and_a_dead_holder_leaves_it_free(tmp_path):
    first = RunLock(tmp_path).acquire()
    with pytest.raises(UserError, match=rf"in use by another trainer \(pid {os.getpid()} on host"):
        RunLock(tmp_path).acquire()
    first.release()
    # a SIGKILLed holder leaves its record behind but no flock: the next trainer takes over
    (tmp_path / ".lock").write_text('{"pid": 999999999, "host": "elsewhere", "started": 0}\n')
    with RunLock(tmp_path) as lock:
        assert lock.holder()["pid"] == os.getpid()


def test_without_flock_a_live_pid_on_this_host_holds_the_dir_and_a_dead_one_does_not(tmp_path, monkeypatch):
    import errno
    import socket

    from rwkv_tune.train import run_lock

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(run_lock.fcntl, "flock", no_flock)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".lock").write_text(f'{{"pid": {sleeper.pid}, "host": "{socket.gethostname()}", "started": 0}}')
        with pytest.raises(UserError, match=f"pid {sleeper.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    with RunLock(tmp_path) as lock:  # the recorded holder is gone: stale, taken over
        assert lock.holder()["pid"] == os.getpid()


def test_only_rank_0_touches_the_lock_and_the_parent_check_reports_a_busy_dir(train_setup, tmp_path):
    raw, _, rundir = tiny(train_setup, tmp_path)
    preset = from_dict(raw)
    with claim_run(preset, rank=1) as claim:
        assert claim.lock is None and not (rundir.root / ".lock").exists()
    with RunLock(rundir.root):  # the dashboard parent / launcher checks before starting processes
        with pytest.raises(UserError, match="in use by another trainer"):
            check_run_dir(preset)
    check_run_dir(preset)  # free again: nothing held afterwards
    assert RunLock(rundir.root).acquire().held


def test_two_trainers_in_one_dir_then_sigkill_and_resume(train_setup, tmp_path):
    raw, path, rundir = tiny(train_setup, tmp_path, epoch_count=3)
    first = train_process(path)
    assert wait_for(lambda: any(e["event"] == "step" for e in read_events(rundir.metrics)), first)
    t0 = time.time()
    second = train_process(path)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 2 and time.time() - t0 < 10, err
    assert f"pid {first.pid}" in " ".join(err.split()), err
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    events = read_events(rundir.metrics)
    assert [e["event"] for e in events].count("run_start") == 1 and events[-1]["event"] == "done"
    assert [e["step"] for e in events if e["event"] == "step"] == list(range(1, 7))

    # a SIGKILLed trainer leaves the directory to the next one: --resume auto proceeds
    killed = train_process(path, "--restart")
    assert wait_for(lambda: rundir.latest_checkpoint() is not None, killed)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=60)
    code, out = cli(path, "--resume", "auto")
    assert code == 0, out
    starts = [e for e in read_events(rundir.metrics) if e["event"] == "run_start"]
    assert len(starts) == 2 and starts[1]["resumed_from_step"] >= 1 and starts[0]["run_id"] == starts[1]["run_id"]
    assert read_events(rundir.metrics)[-1]["event"] == "done"


def test_training_again_needs_resume_or_restart(train_setup, tmp_path):
    raw, path, rundir = tiny(train_setup, tmp_path)
    run(from_dict(raw))
    before = rundir.metrics.read_text()
    code, out = cli(path)
    assert code == 2 and "already holds a run (finished at step 4" in out
    assert "--resume auto" in out and "--restart" in out
    assert rundir.metrics.read_text() == before  # the refusal wrote nothing into the run
    code, out = cli(path, "--restart")
    assert code == 0, out
    [archived] = (rundir.root / "archive").iterdir()
    assert (archived / "metrics.jsonl").read_text() == before and (archived / "checkpoints").is_dir()
    events = read_events(rundir.metrics)
    assert [e["event"] for e in events].count("run_start") == 1 and events[0]["resumed_from_step"] is None
    assert any(e["event"] == "warning" and "archived" in e["message"] for e in events)
    assert cli(path, "--restart", "--resume", "auto")[0] == 2


def test_resume_refuses_exactness_breaking_changes_and_records_schedule_changes(train_setup, tmp_path):
    raw, path, rundir = tiny(train_setup, tmp_path)
    run(from_dict(raw))
    code, out = cli(path, "--resume", "auto", "--set", "data.ctx_len=32", "--set", "train.micro_bsz=3")
    assert code == 2 and "data.ctx_len 16 → 32" in out and "samples per step (train.micro_bsz × devices × nodes) 2 → 3" in out, out
    code, out = cli(path, "--resume", "auto", "--set", "train.epoch_count=3")
    assert code == 0, out
    events = read_events(rundir.metrics)
    assert any(e["event"] == "warning" and "train.epoch_count 2 → 3" in e["message"] for e in events)
    assert events[-1]["event"] == "done" and events[-1]["step"] == 6


def test_resume_path_must_be_a_checkpoint_of_this_run(train_setup, tmp_path):
    raw, path, rundir = tiny(train_setup, tmp_path, epoch_count=1)
    run(from_dict(raw))
    other = from_dict({**raw, "output": {"dir": str(tmp_path / "other")}})
    run(other)
    foreign = RunDir(tmp_path / "other").latest_checkpoint()
    code, out = cli(path, "--resume", foreign)
    assert code == 2 and "is not a checkpoint of the run in" in out, out
    assert cli(path, "--resume", tmp_path)[0] == 2  # not a checkpoint at all
    # a copy of this run's own checkpoint elsewhere is recognised by the run id it records
    backup = tmp_path / "backup"
    shutil.copytree(rundir.latest_checkpoint(), backup)
    code, out = cli(path, "--resume", backup)
    assert code == 0, out


class RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_trainer_pt_that_would_run_code_is_refused_unread(train_setup, tmp_path):
    raw, path, rundir = tiny(train_setup, tmp_path, epoch_count=1)
    run(from_dict(raw))
    evil = rundir.checkpoint(99)
    shutil.copytree(rundir.latest_checkpoint(), evil)
    marker = tmp_path / "pwned"
    torch.save({"optimizer": RunsCode(marker)}, evil / "trainer.pt")
    code, out = cli(path, "--resume", evil)
    assert code == 2 and "not a trainer state rwkv-tune wrote" in out, out
    assert not marker.exists()


def test_the_dashboard_path_reports_a_busy_dir_before_starting_a_trainer(train_setup, tmp_path):
    pexpect = pytest.importorskip("pexpect")
    raw, path, rundir = tiny(train_setup, tmp_path)
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "300"}
    env.pop("RWKV_TUNE_NO_TUI", None)
    with RunLock(rundir.root):
        child = pexpect.spawn(sys.executable, ["-m", "rwkv_tune", "train", str(path)], env=env, timeout=60,
                              dimensions=(30, 300))
        child.expect(pexpect.EOF)
        child.close()
    assert child.exitstatus == 2, child.before
    assert b"in use by another trainer" in child.before
    assert not (rundir.root / "train.log").exists()  # no worker was started


def test_preset_changes_sort_exactness_from_schedule_and_follow_file_content(train_setup, tmp_path):
    from rwkv_tune.checkpoint import fingerprint
    from rwkv_tune.train.resume_check import preset_changes

    model, data, raw = train_setup(7, "lora")
    saved = from_dict(raw)
    saved.provenance = {"base_model": fingerprint(model), "data": fingerprint(data)}
    moved = tmp_path / "elsewhere" / model.name  # the fingerprint hashes the file name with the content
    moved.parent.mkdir()
    shutil.copy(model, moved)
    new = from_dict({**raw, "model": {"path": str(moved)}, "method": {**raw["method"], "r": 4},
                     "train": {**raw["train"], "lr_init": 1e-3, "keep_last": 5}})
    breaking, allowed = preset_changes(saved, new)
    assert breaking == ["method.r 8 → 4"]
    assert any(c.startswith("model.path") and "(same content)" in c for c in allowed)
    assert any(c.startswith("train.lr_init") for c in allowed) and any("keep_last" in c for c in allowed)
    with open(data + ".bin", "r+b") as f:  # the same data path with other content
        f.write(b"\x07\x00")
    breaking, _ = preset_changes(saved, from_dict(raw))
    assert breaking == [f"data.path {data!r}: the file's content changed since the run started"]
