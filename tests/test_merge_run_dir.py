"""`rwkv-tune merge RUN_DIR`: base, adapter and quant from a real (tiny, 4-step) run directory; the flags as
the issue spells them; quant-aware merging by default; one-line errors."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rwkv_tune import load_model, peft
from rwkv_tune.checkpoint import load_state_dict
from rwkv_tune.cli import app
from rwkv_tune.data import write_binidx
from rwkv_tune.merge import file_sha256, merge
from rwkv_tune.preset import from_dict
from rwkv_tune.runs import RunDir
from rwkv_tune.testing import make_model
from rwkv_tune.train import run

VOCAB = 200
ANSI = re.compile(r"\x1b\[[0-9;]*m")
IDX = torch.randint(0, VOCAB, (1, 24), generator=torch.Generator().manual_seed(5))
runner = CliRunner()


def plain(text: str) -> str:
    return ANSI.sub("", text)


def cli(*args) -> tuple[int, str]:
    result = runner.invoke(app, ["merge", *map(str, args)])
    return result.exit_code, plain(result.output)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def train_run(tmp_path, monkeypatch):
    """Factory: train a tiny v7 model for 4 steps in tmp/<name>; the preset names the base relatively."""
    monkeypatch.chdir(tmp_path)
    make_model(tmp_path / "base.pth", version=7, n_layer=2, n_embd=64, head_size=32, vocab_size=VOCAB)
    rng = np.random.default_rng(0)
    docs = [[(int(s) + i) % 190 + 5 for i in range(40)] + [0] for s in rng.integers(1, 190, 32)]
    write_binidx(tmp_path / "corpus", docs)

    def make(name: str = "run", method: dict | None = None, quant: str = "none") -> Path:
        raw = {"model": {"path": "base.pth"}, "method": method or {"name": "lora", "r": 8, "alpha": 16},
               "quant": quant, "data": {"path": "corpus", "ctx_len": 32, "dataload": "pad"},
               "train": {"micro_bsz": 4, "epoch_steps": 2, "epoch_count": 2, "lr_init": 2e-2, "lr_final": 1e-2,
                         "precision": "fp32", "grad_cp": False, "device": "cpu", "seed": 1},
               "output": {"dir": name}}
        result = run(from_dict(raw))
        assert result.reason == "finished" and result.adapter.exists()
        return tmp_path / name

    return make


def logits(path_or_sd) -> torch.Tensor:
    with torch.no_grad():
        return load_model(path_or_sd).eval()(IDX)


def test_merge_a_run_directory(train_run, tmp_path, monkeypatch):
    run_dir = train_run()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # model.path 'base.pth' is relative: found beside the run directory
    code, text = cli(run_dir)
    assert code == 0, text
    assert f"run {run_dir}: base {tmp_path / 'base.pth'}, adapter adapter.safetensors (lora, quant none)" in text
    assert "verified" in text and "merged into the base weights as stored" in text
    rd = RunDir(run_dir)
    report = json.loads(rd.merge_report.read_text())
    assert report["out"]["path"] == str(rd.merged) and report["quant"] == {"trained": "none", "applied": "none",
                                                                           "how": "default"}
    assert report["verification"]["checked"] and report["adapter"]["path"] == str(rd.adapter)
    # the same as merging the files by hand
    merge(tmp_path / "base.pth", rd.adapter, tmp_path / "by-hand.pth")
    a, b = torch.load(rd.merged, weights_only=True), torch.load(tmp_path / "by-hand.pth", weights_only=True)
    assert list(a) == list(load_state_dict(tmp_path / "base.pth")) and all(torch.equal(a[k], b[k]) for k in a)

    code, text = cli(run_dir, "--format", "safetensors", "--no-verify")  # default name follows the format
    assert code == 0 and (run_dir / "merged.safetensors").exists() and "logits not compared" in text
    code, text = cli(run_dir, "--out", tmp_path / "out" / "m.pth", "--dtype", "bf16")
    assert code == 0 and json.loads((tmp_path / "out" / "merge-report.json").read_text())["out"]["dtype"] == "bfloat16"


def test_nf4_run_merges_into_the_weights_training_saw(train_run, tmp_path):
    pytest.importorskip("bitsandbytes")
    run_dir = train_run("q", {"name": "pissa", "r": 8}, quant="nf4")
    rd = RunDir(run_dir)
    code, text = cli(run_dir)
    assert code == 0, text
    assert "quant nf4, PiSSA init from the adapter" in text
    assert "merged into dequant(nf4(W)), the nf4 weights training saw" in text and "--quant none" in text
    report = json.loads(rd.merge_report.read_text())
    assert report["quant"] == {"trained": "nf4", "applied": "nf4", "how": "recorded in the adapter"}
    assert report["verification"]["checked"]

    code, text = cli(run_dir, "--quant", "none", "--out", tmp_path / "fp" / "full.pth")
    assert code == 0 and "merged into the original full-precision base weights" in text
    assert json.loads((tmp_path / "fp" / "merge-report.json").read_text())["quant"]["applied"] == "none"

    trained = load_model(tmp_path / "base.pth")  # the model as training ran it: nf4 base + adapter
    peft.load_adapter(trained, rd.adapter)
    with torch.no_grad():
        want = trained.eval()(IDX)
    aware = (logits(rd.merged) - want).abs().max().item()
    full = (logits(tmp_path / "fp" / "full.pth") - want).abs().max().item()
    assert aware < 1e-4 and aware < full / 10, (aware, full)


def test_flags_as_the_issue_spells_them(tmp_path):
    base = make_model(tmp_path / "base.pth", 7, 2, 64, VOCAB, 32, seed=1)
    g = torch.Generator().manual_seed(0)
    ckpt = {"blocks.0.att.key.lora_A": torch.randn(4, 64, generator=g),
            "blocks.0.att.key.lora_B": torch.randn(64, 4, generator=g) * 0.1}
    torch.save(ckpt, tmp_path / "rwkv-1.pth")
    want = load_state_dict(base)["blocks.0.att.key.weight"] + 8.0 * ckpt["blocks.0.att.key.lora_B"] @ \
        ckpt["blocks.0.att.key.lora_A"]
    for flag, out in (("--lora-alpha", "a.pth"), ("--alpha", "b.pth")):  # --alpha: the old name, hidden
        code, text = cli("--base", base, "--adapter", tmp_path / "rwkv-1.pth", "--out", tmp_path / out, flag, 32)
        assert code == 0, text
        torch.testing.assert_close(torch.load(tmp_path / out)["blocks.0.att.key.weight"], want)
    code, text = cli("--base", base, "--adapter", tmp_path / "rwkv-1.pth", "--out", tmp_path / "m.bin",
                     "--lora-alpha", 32, "--format", "safetensors", "--no-verify")
    assert code == 0 and "safetensors" in text and "logits not compared" in text
    torch.testing.assert_close(_safetensors(tmp_path / "m.bin")["blocks.0.att.key.weight"], want)
    help_text = plain(runner.invoke(app, ["merge", "--help"], env={"COLUMNS": "200"}).output)
    for flag in ("--lora-alpha", "--pissa-init", "--quant", "--format", "--no-verify", "--base", "--adapter"):
        assert flag in help_text
    assert "--alpha " not in help_text.replace("--lora-alpha", "")


def _safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_one_line_errors_exit_2(train_run, tmp_path):
    base = make_model(tmp_path / "b.pth", 7, 2, 64, VOCAB, 32, seed=1)
    sha = file_sha256(base)
    cases = [
        ((base,), "is not a run directory (it is a file)"),
        ((tmp_path / "nope",), "is not a run directory (it does not exist)"),
        ((tmp_path,), "is not a run directory (no preset.yaml)"),
        ((), "nothing to merge: give a run directory, or --base, --adapter and --out (missing --base, --adapter, "
             "--out)"),
        (("--base", base, "--adapter", tmp_path / "a.safetensors"), "(missing --out)"),
        (("--base", base, "--adapter", base, "--out", tmp_path / "x.pth", "--format", "gguf"), "--format gguf"),
        (("--base", base, "--adapter", base, "--out", tmp_path / "x.pth", "--format", "safetensors"),
         "--format safetensors but --out"),
        (("--base", base, "--adapter", base, "--out", tmp_path / "x.pth", "--quant", "int4"), "--quant int4"),
    ]
    for args, message in cases:
        code, text = cli(*args)
        assert code == 2 and message in text and len(text.strip().splitlines()) == 1, (args, text)
    run_dir = train_run()
    RunDir(run_dir).adapter.unlink()
    code, text = cli(run_dir)
    assert code == 2 and "has no adapter.safetensors" in text and "checkpoints/step-" in text
    assert len(text.strip().splitlines()) == 1 and file_sha256(base) == sha
