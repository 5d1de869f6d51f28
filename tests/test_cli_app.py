"""The CLI skeleton: help, version, inspect, doctor, one-line errors, and torch-free start-up."""

import json
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from rwkv_tune import __version__
from rwkv_tune.cli import app

runner = CliRunner()
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def plain(text: str) -> str:
    return ANSI.sub("", text)


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("inspect", "doctor", "data", "merge", "estimate"):
        assert command in plain(result.output)


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_help_does_not_import_torch():
    code = ("import sys; sys.argv=['rwkv-tune','--help']\nfrom rwkv_tune.cli import main\ntry:\n    main()\n"
            "except SystemExit:\n    pass\n"
            "heavy=[m for m in ('torch','deepspeed','bitsandbytes','numpy') if m in sys.modules]\n"
            "assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "rwkv_tune", "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and __version__ in result.stdout


def test_inspect_json(tiny_model):
    path = tiny_model(7, n_layer=3, n_embd=128, head_size=64, vocab_size=500)
    result = runner.invoke(app, ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["version"] == 7 and info["n_layer"] == 3 and info["n_embd"] == 128
    assert info["n_head"] == 2 and info["head_size"] == 64 and info["vocab_size"] == 500
    assert info["dim_ffn"] == 512 and info["dtype"] == "float32"
    assert info["params"] == sum(t.numel() for t in __import__("torch").load(path).values())


def test_inspect_table_shows_peft_flags(tiny_model):
    path = tiny_model(6, n_layer=2, n_embd=64, head_size=32)
    result = runner.invoke(app, ["inspect", str(path)], terminal_width=200)
    assert result.exit_code == 0
    assert "--my_testing x060 --n_layer 2 --n_embd 64" in plain(result.output)


@pytest.mark.parametrize("variant,name", [("7a", "RWKV-7a DeepEmbed"), ("7b", "RWKV-7b DeepEmbed Attention")])
def test_inspect_shows_deep_embed_variant(tiny_model, variant, name):
    path = tiny_model(7, n_layer=1, n_embd=64, head_size=32, vocab_size=100, variant=variant)
    result = runner.invoke(app, ["inspect", str(path)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert f"{name} ({variant})" in plain(result.output)
    info = json.loads(runner.invoke(app, ["inspect", str(path), "--json"]).stdout)
    assert info["variant"] == variant and info["variant_name"] == name


def test_bad_model_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_text("not a model")
    result = runner.invoke(app, ["inspect", str(bad)])
    assert result.exit_code == 2
    lines = [line for line in plain(result.output).splitlines() if line.strip()]
    assert len(lines) == 1 and "bad.pth" in lines[0] and "Traceback" not in result.output


def test_console_script_error_is_one_line(tmp_path):
    bad = tmp_path / "empty.pth"
    bad.write_bytes(b"")
    result = subprocess.run([sys.executable, "-m", "rwkv_tune", "inspect", str(bad)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "empty" in result.stderr


def test_doctor_json():
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0
    names = {c["name"] for c in json.loads(result.stdout)}
    assert {"python", "torch", "nvcc", "ninja", "deepspeed", "bitsandbytes", "fla"} <= names
    gpu_paths = next(c for c in json.loads(result.stdout) if c["name"] == "gpu paths")
    assert "not yet measured on a GPU" in gpu_paths["detail"]  # the README's rule: claim only what a test shows
