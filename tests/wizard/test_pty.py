"""The real questionary prompts of `rwkv-tune init`, driven end to end in a pseudo-terminal."""

from __future__ import annotations

import os
import sys

import pytest

from rwkv_tune.preset import check_against_spec, load
from rwkv_tune.spec import detect
from rwkv_tune.testing import make_model

pexpect = pytest.importorskip("pexpect")

# The lead registers `init` in rwkv_tune.cli; this local app keeps the test independent of that.
APP = ("import typer\nfrom rwkv_tune.cli._common import run_guarded\nfrom rwkv_tune.cli.init import init\n"
       "app = typer.Typer()\napp.command('init')(init)\n@app.callback()\ndef _root() -> None:\n    pass\n"
       "run_guarded(app)\n")
DOWN, CLEAR = "\x1b[B", "\x15"  # arrow down; Ctrl-U clears the pre-filled default


def test_wizard_in_a_terminal_writes_a_valid_preset(tmp_path, monkeypatch):
    make_model(tmp_path / "models" / "tiny.safetensors", n_layer=2, n_embd=128)
    (tmp_path / "train.jsonl").write_text('{"text": "hello"}\n' * 40)
    env = {**os.environ, "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm", "NO_COLOR": "1", "COLUMNS": "160"}
    child = pexpect.spawn(sys.executable, ["-c", APP, "init", "--gpu", "24GB"], cwd=str(tmp_path), env=env,
                          encoding="utf-8", timeout=60, dimensions=(50, 160))
    try:
        child.expect("Base model file")  # offers the model files it found under the working directory
        child.expect("tiny.safetensors")
        child.send("\r")
        child.expect("RWKV-7")  # the detected spec, at once
        child.expect("VRAM ≈")  # and the estimate, again after every answer that changes it
        child.expect("What kind of training?")
        child.send("\r")  # SFT
        child.expect("Training data")
        child.send("missing.jsonl\r")
        child.expect("does not exist")  # a bad answer gets the reason and the question again
        child.expect("Training data")
        child.send(CLEAR + "train.jsonl\r")
        child.expect("Tokenize it once now")
        child.send("n")
        child.expect("Fine-tuning method")
        child.send(DOWN + DOWN + "\r")  # lora → pissa → miss
        child.expect("shard size")
        child.send(CLEAR + "32\r")
        child.expect("Quantise")
        child.send("\r")
        child.expect("Context length in tokens")
        child.send(CLEAR + "512\r")
        child.expect("VRAM ≈")
        child.expect("Sequences per GPU per step")
        child.send("\r")
        child.expect("Gradient checkpointing")
        child.send("\r")
        child.expect("Adjust precision")
        child.send("y")
        child.expect("Precision")
        child.send("\r")
        child.expect("Strategy")
        child.send("\r")
        child.expect("at the start")
        child.send(CLEAR + "3e-4\r")
        child.expect("at the end")
        child.send("\r")
        child.expect("steps per epoch")
        child.send("\r")
        child.expect("Epochs")
        child.send(CLEAR + "2\r")
        child.expect("Write the preset to")
        child.send("\r")
        child.expect("rwkv-tune train preset.yaml")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
    preset = load(tmp_path / "preset.yaml")
    check_against_spec(preset, detect(tmp_path / "models" / "tiny.safetensors"))
    assert preset.model.path == "models/tiny.safetensors" and preset.data.path == "train.jsonl"
    assert (preset.method.name, preset.method.mode, preset.method.r) == ("miss", "bone", 32)
    assert preset.data.ctx_len == 512 and preset.train.epoch_count == 2
    assert preset.train.lr_init == pytest.approx(3e-4) and preset.train.lr_final == pytest.approx(6e-5)
    assert preset.train.epoch_steps == 40  # 40 documents / batch 1 = one pass
    monkeypatch.chdir(tmp_path)  # the preset's paths are relative to where the wizard ran
    assert_train_dry_run_accepts("preset.yaml")


def assert_train_dry_run_accepts(preset: str) -> None:
    """`rwkv-tune train PRESET --dry-run` (when the train command is present) takes what the wizard wrote."""
    try:
        from rwkv_tune.cli.train import train
    except ImportError:  # pragma: no cover - the train command lands in its own change
        return
    import json

    import typer
    from typer.testing import CliRunner

    app = typer.Typer()
    app.command("train")(train)

    @app.callback()
    def _root() -> None:
        pass

    result = CliRunner().invoke(app, ["train", preset, "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["method"] == "miss"
