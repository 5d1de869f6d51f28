"""Training end to end on CPU: every method learns, guards, control words, infctx, the CLI."""

import json
import re

import pytest
import torch
from typer.testing import CliRunner

from rwkv_tune.cli import app
from rwkv_tune.model import load_model
from rwkv_tune.preset import from_dict
from rwkv_tune.runs import RunDir, read_events
from rwkv_tune.train import run
from rwkv_tune.train.losses import sequence_loss

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def learned(losses: list[float]) -> bool:
    return sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05


@pytest.mark.parametrize("version", [6, 7])
@pytest.mark.parametrize("method", ["lora", "pissa", "disha", "bat", "state", "full"])
def test_every_method_learns(train_setup, version, method):
    lr = {"state": 0.5, "full": 3e-3}.get(method, 1e-2)
    _, _, raw = train_setup(version, method, lr_init=lr, lr_final=lr / 3)
    result = run(from_dict(raw))
    assert result.reason == "finished" and result.step == 12
    assert learned(result.losses), result.losses
    assert result.adapter is not None and result.adapter.exists()


@pytest.mark.parametrize("quant", ["int8", "nf4"])
def test_quantized_base_learns(train_setup, quant):
    _, _, raw = train_setup(7, "lora", lr_init=1e-2, lr_final=3e-3)
    raw["quant"] = quant
    result = run(from_dict(raw))
    assert learned(result.losses), result.losses


def test_events_checkpoints_and_resolved_preset(train_setup):
    _, _, raw = train_setup(7, "lora", save_every_steps=4, keep_last=2)
    result = run(from_dict(raw))
    rundir = RunDir(result.adapter.parent)
    events = read_events(rundir.metrics)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_start" and kinds[-1] == "done" and kinds.count("step") == 12
    step = next(e for e in events if e["event"] == "step")
    for key in ("step", "epoch", "loss", "lr", "tokens", "tokens_per_s", "elapsed_s", "grad_norm", "mem"):
        assert key in step
    plan = events[0]["plan"]
    assert plan["total_steps"] == 12 and 0 < plan["trainable_params"] < plan["total_params"]
    assert [p.name for p in rundir.list_checkpoints()] == ["step-00000008", "step-00000012"]
    resolved = rundir.preset.read_text()
    assert "provenance" in resolved and "sha256_head_tail" in resolved and "n_layer: 2" in resolved


def test_nan_losses_stop_the_run_and_say_why(train_setup):
    _, _, raw = train_setup(7, "full", lr_init=1e12, lr_final=1e12, lr_schedule="constant", max_bad_steps=2,
                            grad_clip=0.0, epoch_count=4)
    result = run(from_dict(raw))
    assert result.reason == "diverged"
    events = read_events(RunDir(from_dict(raw).output.dir and result.adapter.parent if result.adapter else
                                 __import__("pathlib").Path(raw["output"]["dir"])).metrics)
    assert any(e["event"] == "error" and e["kind"] == "diverged" for e in events)
    assert sum(e["event"] == "warning" and "skipped" in e["message"] for e in events) >= 2


def test_stop_control_word_saves_and_stops(train_setup, tmp_path):
    _, _, raw = train_setup(7, "lora", epoch_count=50)
    preset = from_dict(raw)
    rundir = RunDir(tmp_path / "run")
    rundir.root.mkdir(parents=True, exist_ok=True)
    rundir.control.write_text("stop")  # stale, from an earlier session: must be ignored

    def dashboard(event):
        if event["event"] == "step" and event["step"] == 2:
            rundir.control.write_text("stop")

    result = run(preset, echo=dashboard)
    assert result.reason == "stopped" and result.step == 2
    assert rundir.latest_checkpoint().name == "step-00000002"
    assert any(e["event"] == "control" and e["action"] == "stop" for e in read_events(rundir.metrics))


@pytest.mark.parametrize("version", [6, 7])
def test_infctx_chunks_compute_the_full_length_loss(tmp_path, version):
    from rwkv_tune.testing import make_model

    model = load_model(make_model(tmp_path / "m.pth", version=version, n_layer=2, n_embd=64, head_size=32,
                                  vocab_size=200))
    x = torch.randint(0, 200, (2, 64), generator=torch.Generator().manual_seed(0))
    y = torch.roll(x, -1, 1)
    y[0, 50:] = -100
    full, n_full = sequence_loss(model, x, y, scale=1.0, l2wrap=False, backward=False)
    chunked, n_chunked = sequence_loss(model, x, y, scale=1.0, chunk_ctx=16, l2wrap=False, backward=False)
    assert n_full == n_chunked == 128 - 14
    assert abs(full - chunked) <= 1e-4 * abs(full)


def test_infctx_trains(train_setup):
    _, _, raw = train_setup(7, "lora", train_type="infctx", chunk_ctx=16, lr_init=1e-2, lr_final=3e-3)
    assert learned(run(from_dict(raw)).losses)


def test_cli_train_no_tui_and_dry_run(train_setup, tmp_path):
    import yaml

    _, _, raw = train_setup(7, "lora")
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump(raw))
    runner = CliRunner()
    dry = runner.invoke(app, ["train", str(path), "--dry-run", "--json", "--set", "train.epoch_steps=3"])
    assert dry.exit_code == 0, dry.output
    plan = json.loads(dry.stdout)
    assert plan["total_steps"] == 6 and plan["trainable_params"] > 0 and plan["vram_gib"] > 0
    assert plan["data_tokens"] > 0 and plan["passes_over_data"] > 0
    result = runner.invoke(app, ["train", str(path), "--no-tui", "--set", "train.epoch_steps=3"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "adapter.safetensors").exists()
    bad = runner.invoke(app, ["train", str(path), "--set", "train.lr_int=1"])
    assert bad.exit_code == 2 and "lr_init" in ANSI.sub("", bad.output)


@pytest.mark.parametrize("version", [5, 6, 7])
def test_bf16_autocast_with_fp32_trainable_weights(train_setup, version):
    _, _, raw = train_setup(version, "lora", precision="bf16", epoch_steps=2, epoch_count=1)
    result = run(from_dict(raw))
    assert result.reason == "finished" and all(torch.isfinite(torch.tensor(result.losses)))


def test_eval_and_sample_events(train_setup):
    _, data, raw = train_setup(7, "lora", sample_every=6, sample_prompts=["\x05\x06\x07", "count"], sample_tokens=4)
    raw["data"].update({"eval_path": data, "eval_every": 4, "eval_batches": 2})
    result = run(from_dict(raw))
    events = read_events(result.adapter.parent / "metrics.jsonl")
    evals = [e for e in events if e["event"] == "eval"]
    assert [e["step"] for e in evals] == [4, 8, 12]
    assert all(e["ppl"] == pytest.approx(__import__("math").exp(e["loss"])) for e in evals)
    assert evals[-1]["loss"] < evals[0]["loss"]
    samples = [e for e in events if e["event"] == "sample"]
    assert [s["step"] for s in samples] == [6, 12] and all(s["prompt"] == "\x05\x06\x07" for s in samples)
    assert any(e["event"] == "warning" and "beyond the model's vocab" in e["message"] for e in events)


def test_out_of_memory_names_the_knobs_and_writes_nothing(train_setup, monkeypatch):
    from rwkv_tune.errors import UserError
    from rwkv_tune.train.loop import Trainer

    _, _, raw = train_setup(7, "lora", micro_bsz=4)

    def boom(self):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(Trainer, "train_step", boom)
    with pytest.raises(UserError) as info:
        run(from_dict(raw))
    message = info.value.one_line()
    assert "out of GPU memory at step 1" in message and "micro_bsz 4→2" in message and "quant none→nf4" in message
    rundir = RunDir(__import__("pathlib").Path(raw["output"]["dir"]))
    assert rundir.list_checkpoints() == [] and not rundir.adapter.exists()
    assert read_events(rundir.metrics)[-1]["event"] == "error"


def test_disk_full_keeps_the_previous_checkpoint(train_setup, monkeypatch):
    import errno

    from rwkv_tune.errors import UserError
    from rwkv_tune.train import checkpointing

    _, _, raw = train_setup(7, "lora", save_every_steps=2)
    real_save = torch.save

    def save(obj, path, *a, **k):
        if "step-00000004" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(checkpointing.torch, "save", save)
    with pytest.raises(UserError, match="disk full .* step 4 .*step-00000002.* intact"):
        run(from_dict(raw))
    rundir = RunDir(__import__("pathlib").Path(raw["output"]["dir"]))
    assert [p.name for p in rundir.list_checkpoints()] == ["step-00000002"]
    assert not list(rundir.checkpoints.glob(".*tmp"))
