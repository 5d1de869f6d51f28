"""merged.pth records the run and step it came from; merge, watch and generate say when it is stale or
from a run that stopped early; watch shows a merge done by `rwkv-tune merge` too."""

import json
import re

from typer.testing import CliRunner

from rwkv_tune.cli import app
from rwkv_tune.preset import from_dict
from rwkv_tune.runs import RunDir
from rwkv_tune.train import run

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def cli(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, ANSI.sub("", result.stdout), ANSI.sub("", result.stderr)


def stop_at(rundir: RunDir, step: int):
    def dashboard(event):
        if event["event"] == "step" and event["step"] == step:
            rundir.control.write_text("stop")

    return dashboard


def test_a_merge_of_a_stopped_run_says_so_in_merge_watch_and_generate(train_setup, tmp_path):
    _, _, raw = train_setup(7, "lora", epoch_steps=10, epoch_count=3)
    rundir = RunDir(tmp_path / "run")
    assert run(from_dict(raw), echo=stop_at(rundir, 3)).reason == "stopped"

    code, out, err = cli("merge", rundir.root)
    assert code == 0, out + err
    early = "merged from step 3 of 30 — the run stopped early"
    assert early in " ".join(out.split())
    report = json.loads(rundir.merge_report.read_text())
    assert report["source"] == {"run": str(rundir.root.resolve()), "step": 3, "total_steps": 30, "reason": "stopped"}

    code, out, _ = cli("watch", rundir.root, "--plain")  # merged by `rwkv-tune merge`: no merge event in metrics
    assert code == 0
    assert f"merged   {rundir.merged}" in out and f"note     {early}" in out

    code, out, err = cli("generate", rundir.merged, "--prompt", "\x05\x06", "--max-tokens", "2", "--temperature", "0")
    assert code == 0, err
    assert early in " ".join(err.split())


def test_a_merge_older_than_the_runs_latest_adapter_is_stale(train_setup, tmp_path):
    _, _, raw = train_setup(7, "lora", epoch_steps=2, epoch_count=2)
    rundir = RunDir(tmp_path / "run")
    run(from_dict(raw))
    code, out, err = cli("merge", rundir.root)
    assert code == 0, out + err
    assert "stale" not in out and "early" not in out
    assert json.loads(rundir.merge_report.read_text())["source"]["step"] == 4
    code, out, _ = cli("watch", rundir.root, "--plain")
    assert f"merged   {rundir.merged}" in out and "note" not in out

    raw["train"]["epoch_count"] = 3
    run(from_dict(raw), resume="auto")  # the run goes on to step 6; merged.pth is still step 4's
    stale = f"merged.pth is stale: merged from step 4, the run's latest adapter is step 6; merge again: " \
            f"rwkv-tune merge {rundir.root.resolve()}"
    code, out, _ = cli("watch", rundir.root, "--plain")
    assert f"note     {stale}" in out
    code, out, err = cli("generate", rundir.merged, "--prompt", "\x05\x06", "--max-tokens", "2", "--temperature", "0")
    assert code == 0 and stale in " ".join(err.split()), err

    older = rundir.checkpoint(4) / "adapter.safetensors"  # an older checkpoint's adapter, merged elsewhere
    code, out, err = cli("merge", "--base", raw["model"]["path"], "--adapter", older, "--out", tmp_path / "old.pth")
    assert code == 0, out + err
    assert "merged from step 4, the run's latest adapter is step 6" in " ".join(out.split())
