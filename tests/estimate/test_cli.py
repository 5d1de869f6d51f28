"""`rwkv-tune estimate` through Typer's CliRunner, presets, model files, and the no-torch promise."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rwkv_tune.cli import app
from rwkv_tune.estimate import estimate, released_spec

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run(*args: str):
    return CliRunner().invoke(app, ["estimate", *args])


def text(result) -> str:
    return ANSI.sub("", result.output)


def test_json_has_total_and_a_breakdown_that_sums_to_it():
    r = run("--size", "1.5B", "--method", "lora", "--rank", "32", "--quant", "nf4", "--ctx-len", "2048", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["total_gib"] == pytest.approx(sum(d["breakdown"].values()))
    assert d["config"]["quant"] == "nf4" and d["config"]["rank"] == 32 and d["config"]["ctx_len"] == 2048
    assert d["model"]["n_layer"] == 24 and d["model"]["n_embd"] == 2048
    assert d["total_gib"] == pytest.approx(estimate(size="1.5B", rank=32, quant="nf4", ctx_len=2048).total_gib)
    assert d["gpus_fit"] and d["target"]["name"] == d["gpus_fit"][0] and d["target_asked"] is False
    assert d["max_micro_bsz"] >= 1 and d["max_ctx_len"] >= 2048
    assert d["timing"]["tokens_per_s"] is None and d["timing"]["rough"] is True  # no card asked: no speed


def test_without_gpu_no_verdict_on_a_card_and_no_time():
    r = run("--size", "0.1B", "--tokens", "1000")
    assert r.exit_code == 0, r.output
    out = text(r)
    assert "Fits: RTX 3060 Laptop 6GB" in out and "On RTX" not in out and "tokens/s" not in out
    assert "pass --gpu CARD" in out and "→" not in out
    asked = json.loads(run("--size", "0.1B", "--gpu", "4090", "--tokens", "1000", "--json").stdout)
    assert asked["target_asked"] is True and asked["timing"]["tokens_per_s"] > 0


def test_table_output_names_components_fit_and_speed():
    r = run("--size", "2.9B", "--gpu", "4090", "--tokens", "100000000")
    assert r.exit_code == 0, r.output
    out = text(r)
    for word in ("Peak VRAM", "base weights", "embedding head", "activations", "logits loss", "cuda context",
                 "total", "Fits:", "On RTX 4090 24GB: fits", "micro_bsz up to", "ctx_len up to", "tokens/s", "100.0M tokens"):
        assert word in out


def test_does_not_fit_shows_the_fix():
    r = run("--size", "7B", "--ctx-len", "8192", "--micro-bsz", "4", "--no-grad-cp", "--gpu", "4090")
    assert r.exit_code == 0, r.output
    out = text(r)
    assert "does not fit" in out and "Fix for RTX 4090 24GB:" in out and "--grad-cp" in out and "saves" in out


@pytest.mark.parametrize("args", [["--size", "9B"], ["--size", "7B", "--version", "4"], ["--size", "1.5B", "--method", "dora"],
                                  ["--size", "1.5B", "--gpu", "tpu"], ["--size", "1.5B", "--devices", "2"]])
def test_bad_values_exit_2_with_one_line(args):
    r = run(*args)
    assert r.exit_code == 2
    lines = text(r).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")


def test_bad_size_lists_valid_sizes():
    r = run("--size", "9B", "--version", "6")
    assert r.exit_code == 2 and "Valid sizes: 1.6B, 3B, 7B, 14B" in text(r)


def test_preset_values_and_flag_overrides(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text(
        "model: {size: 3B, version: 6}\n"
        "method: {name: bat, r: 32, train_parts: [ln]}\n"
        "quant: int8\n"
        "data: {path: d.jsonl, ctx_len: 2048}\n"
        "train: {micro_bsz: 2, grad_cp: false, strategy: deepspeed_stage_2, devices: 2, nodes: 2, epoch_steps: 10, epoch_count: 3}\n"
        "output: {dir: runs/x}\n")
    d = json.loads(run(str(preset), "--json").stdout)
    c = d["config"]
    assert (c["method"], c["mode"], c["rank"], c["quant"], c["ctx_len"]) == ("miss", "bat", 32, "int8", 2048)
    assert (c["micro_bsz"], c["grad_cp"], c["strategy"], c["devices"]) == (2, False, "deepspeed_stage_2", 4)
    assert c["train_parts"] == ["ln"] and d["model"]["version"] == 6 and d["model"]["n_embd"] == 2560
    assert d["timing"]["tokens"] == 10 * 3 * 2 * 4 * 2048
    d2 = json.loads(run(str(preset), "--micro-bsz", "1", "--quant", "nf4", "--grad-cp", "--json").stdout)
    assert (d2["config"]["micro_bsz"], d2["config"]["quant"], d2["config"]["grad_cp"]) == (1, "nf4", True)
    assert d2["total_gib"] < d["total_gib"]


def test_preset_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {micro_bsz: two}\n")
    r = run(str(bad), "--size", "1.5B")
    assert r.exit_code == 2 and "train.micro_bsz = 'two' is not a whole number" in text(r)
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [\n")
    assert run(str(broken)).exit_code == 2
    assert run(str(tmp_path / "missing.yaml")).exit_code == 2
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    r = run(str(empty))
    assert r.exit_code == 2 and "no model given" in text(r)


def _fake_safetensors(path: Path, version: int, size: str) -> Path:
    """A safetensors header with a released model's shapes (no weights: detection reads the header only)."""
    shapes = released_spec(size, version).expected_shapes()
    header, offset = {}, 0
    for key, shape in shapes.items():
        n = 2
        for d in shape:
            n *= d
        header[key] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    return path


def test_model_file_is_detected_and_preset_path_is_relative_to_the_preset(tmp_path):
    model = _fake_safetensors(tmp_path / "m.safetensors", 6, "1.6B")
    r = run("--model", str(model), "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["model"]["version"] == 6 and d["model"]["n_layer"] == 24 and d["model"]["params"] == 1_599_873_024
    preset = tmp_path / "p.yaml"
    preset.write_text("model: {path: m.safetensors}\n")
    assert json.loads(run(str(preset), "--json").stdout)["total_gib"] == pytest.approx(d["total_gib"])
    r = run("--model", str(model), "--size", "1.5B")
    assert r.exit_code == 2 and "both given" in text(r)
    r = run("--model", str(model), "--version", "7")
    assert r.exit_code == 2 and "RWKV-6" in text(r)


def test_estimate_cli_and_import_load_no_torch():
    code = (
        "import json, sys, time\n"
        "t0 = time.perf_counter()\n"
        "from typer.testing import CliRunner\n"
        "from rwkv_tune.cli import app\n"
        "import rwkv_tune.estimate\n"
        "t1 = time.perf_counter()\n"
        "r = CliRunner().invoke(app, ['estimate', '--size', '7B', '--method', 'lora', '--gpu', '4090', '--json'])\n"
        "t2 = time.perf_counter()\n"
        "assert r.exit_code == 0, r.output\n"
        "assert json.loads(r.stdout)['total_gib'] > 0\n"
        "r = CliRunner().invoke(app, ['estimate', '--size', '14B', '--no-grad-cp', '--micro-bsz', '8'])\n"
        "assert r.exit_code == 0, r.output\n"
        "heavy = [m for m in ('torch', 'deepspeed', 'bitsandbytes') if m in sys.modules]\n"
        "print(json.dumps({'heavy': heavy, 'import_s': t1 - t0, 'estimate_s': t2 - t1}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["heavy"] == [], info  # start-up time is printed by the benchmark, not asserted here
