"""`rwkv-tune init` from flags (--yes): the commented preset it writes, its errors, and no torch for .safetensors."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import typer
import yaml
from typer.testing import CliRunner

from rwkv_tune import wizard
from rwkv_tune.cli.init import init
from rwkv_tune.preset import check_against_spec, from_dict, load
from rwkv_tune.presets_library import render
from rwkv_tune.spec import detect

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(autouse=True)
def no_gpus(monkeypatch):
    """The same answers on every machine: no detected GPUs unless a test names a target."""
    monkeypatch.setattr(wizard, "detect_gpus", lambda: ())


def run(*args: str):
    app = typer.Typer()
    app.command("init")(init)

    @app.callback()
    def _root() -> None:
        pass

    return CliRunner().invoke(app, ["init", *args])


def plain(result) -> str:
    return ANSI.sub("", result.output)


def test_every_flag_of_the_issue_writes_a_commented_preset_that_loads(tiny_model, tmp_path):
    model = tiny_model(7, n_layer=2, n_embd=128)
    out = tmp_path / "preset.yaml"
    r = run("--model", str(model), "--data", "d", "--method", "disha", "--rank", "64", "--quant", "nf4",
            "--ctx-len", "1024", "--micro-bsz", "1", "--out", str(out), "--yes")
    assert r.exit_code == 0, r.output
    assert f"rwkv-tune train {out}" in plain(r) and "VRAM ≈" in plain(r)
    assert "data d does not exist" in plain(r)  # a warning, not an error: scripts may write data later
    text = out.read_text()
    assert text.startswith("# rwkv-tune preset: miss r64, quant nf4")
    assert "# Estimate: VRAM ≈" in text and f"# Next: rwkv-tune train {out}" in text
    assert "  r: 64" in text and "# adapter rank" in text  # values with their field docs as comments
    preset = load(out)
    check_against_spec(preset, detect(model))
    assert (preset.method.name, preset.method.mode, preset.method.r) == ("miss", "bone", 64)  # canonical form
    assert (preset.quant, preset.data.ctx_len, preset.train.micro_bsz) == ("nf4", 1024, 1)
    assert preset.model.path == str(model) and preset.data.path == "d"
    assert preset.model.spec["n_embd"] == 128
    # round trip: what load() reads renders to the same preset again
    assert from_dict(yaml.safe_load(render(preset))).to_dict() == preset.to_dict()


def test_all_other_flags(tiny_model, tmp_path):
    model = tiny_model(6, n_layer=2, n_embd=64, head_size=32)
    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "a"}\n' * 10)
    out = tmp_path / "sub" / "p.yaml"
    r = run("-m", str(model), "-d", str(data), "--method", "state", "--no-grad-cp", "--precision", "fp32",
            "--strategy", "deepspeed_stage_2", "--devices", "2", "--accumulate", "3", "--lr-init", "0.5",
            "--lr-final", "0.005", "--epoch-steps", "7", "--epoch-count", "2", "--train-type", "infctx",
            "--ctx-len", "2048", "--chunk-ctx", "256", "--gpu", "A100 80GB", "-o", str(out), "--yes")
    assert r.exit_code == 0, r.output
    p = load(out)
    t = p.train
    assert p.method.name == "state" and p.quant == "none" and not t.grad_cp and t.precision == "fp32"
    assert (t.strategy, t.devices, t.accumulate_grad_batches) == ("deepspeed_stage_2", 2, 3)
    assert (t.lr_init, t.lr_final, t.epoch_steps, t.epoch_count) == (0.5, 0.005, 7, 2)
    assert (t.train_type, t.chunk_ctx, p.data.ctx_len) == ("infctx", 256, 2048)
    assert "A100 80GB" in plain(r)


def test_recommended_values_without_flags(tiny_model, tmp_path):
    out = tmp_path / "p.yaml"
    r = run("--model", str(tiny_model()), "--out", str(out), "--yes")
    assert r.exit_code == 0, r.output
    p = load(out)
    assert p.method.name == "lora" and p.method.r == 32 and p.train.lr_init == 1e-4 and p.train.lr_final == 2e-5
    assert p.data.path == "data/train"  # placeholder, with a warning
    assert "does not exist" in plain(r)


def test_without_a_terminal_and_without_yes_is_one_line_exit_2(tiny_model):
    r = run("--model", str(tiny_model()))
    assert r.exit_code == 2
    lines = [line for line in plain(r).splitlines() if line.strip()]
    assert len(lines) == 1 and "not a terminal" in lines[0] and "--yes" in lines[0]


@pytest.mark.parametrize(("args", "match"), [
    (["--yes"], "--yes needs --model"),
    (["--yes", "--model", "missing.pth"], "missing.pth"),
    (["--yes", "--quant", "nf5"], "quant = 'nf5'"),
    (["--yes", "--method", "bat", "--rank", "100"], "divisible"),
    (["--yes", "--devices", "2", "--strategy", "single"], "DeepSpeed"),
    (["--yes", "--gpu", "RTX 9999"], "unknown --gpu"),
])
def test_bad_flags_are_one_line_exit_2(tiny_model, tmp_path, args, match):
    if "--model" not in args and args != ["--yes"]:
        args = [*args, "--model", str(tiny_model())]
    r = run(*args, "--out", str(tmp_path / "p.yaml"))
    assert r.exit_code == 2, r.output
    lines = [line for line in plain(r).splitlines() if line.strip()]
    assert len(lines) == 1 and match in lines[0] and "Traceback" not in r.output
    assert not (tmp_path / "p.yaml").exists()


def test_never_overwrites_without_force(tiny_model, tmp_path):
    out = tmp_path / "p.yaml"
    out.write_text("mine\n")
    model = str(tiny_model())
    r = run("--model", model, "--out", str(out), "--yes")
    assert r.exit_code == 2 and "--force" in plain(r) and out.read_text() == "mine\n"
    r = run("--model", model, "--out", str(out), "--yes", "--force")
    assert r.exit_code == 0 and load(out).model.path == model


def test_safetensors_model_with_yes_does_not_import_torch(tmp_path):
    from rwkv_tune.testing import make_model

    model = make_model(tmp_path / "m.safetensors")
    code = ("import sys, typer\nfrom rwkv_tune.cli.init import init\napp = typer.Typer()\napp.command('init')(init)\n"
            "@app.callback()\ndef _r() -> None:\n    pass\n"
            "try:\n    app(sys.argv[1:])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "heavy = [m for m in ('torch', 'deepspeed', 'bitsandbytes') if m in sys.modules]\nassert not heavy, heavy\n")
    out = tmp_path / "p.yaml"
    result = subprocess.run([sys.executable, "-c", code, "init", "--model", str(model), "--data", "d", "--quant", "nf4",
                             "--out", str(out), "--yes"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
    assert load(out).quant == "nf4"


def test_quantised_preset_can_be_written_without_bitsandbytes(tiny_model, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    out = tmp_path / "p.yaml"
    r = run("--model", str(tiny_model()), "--data", "d", "--quant", "int8", "--out", str(out), "--yes")
    assert r.exit_code == 0, r.output
    assert "needs bitsandbytes" in plain(r) and yaml.safe_load(out.read_text())["quant"] == "int8"
