"""Honest plan numbers: passes over the data by documents in pad mode (tokens in get mode), a warning for a
plan that goes over the data too many times, and parameter counts that include quantized weights."""

import json
import re

import pytest
import yaml
from typer.testing import CliRunner

from rwkv_tune.cli import app
from rwkv_tune.data import write_binidx
from rwkv_tune.preset import from_dict
from rwkv_tune.runs import read_events
from rwkv_tune.train import run
from rwkv_tune.train.plan import many_passes_warning, passes_over_data
from rwkv_tune.tui.format import plan_line

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def corpus(prefix, n_docs: int, length: int = 20):
    write_binidx(prefix, [[5 + (d + i) % 150 for i in range(length)] + [0] for d in range(n_docs)])
    return str(prefix)


def dry_run(tmp_path, raw, *extra):
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["train", str(path), "--dry-run", *extra])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_pad_mode_passes_count_documents_not_padded_tokens(train_setup, tmp_path):
    _, _, raw = train_setup(7, "lora", micro_bsz=4, epoch_steps=20, epoch_count=2)  # 160 samples
    raw["data"].update({"path": corpus(tmp_path / "docs", 200), "ctx_len": 32, "dataload": "pad"})
    plan = json.loads(dry_run(tmp_path, raw, "--json"))
    assert plan["passes_over_data"] == pytest.approx(160 / 200)  # 160 of 200 documents: 0.8 passes
    assert plan["warnings"] == []
    text = ANSI.sub("", dry_run(tmp_path, raw))
    assert "≈ 0.80 passes over the data" in text


def test_get_mode_passes_count_tokens(train_setup, tmp_path):
    _, _, raw = train_setup(7, "lora", micro_bsz=4, epoch_steps=10, epoch_count=1)
    raw["data"].update({"path": corpus(tmp_path / "docs", 200), "ctx_len": 32, "dataload": "get"})
    p = from_dict(raw)
    assert passes_over_data(p) == pytest.approx(40 * 32 / (200 * 21))


def test_a_plan_with_too_many_passes_warns(train_setup, tmp_path):
    _, _, raw = train_setup(7, "lora", micro_bsz=4, epoch_steps=100, epoch_count=2)  # 800 samples
    raw["data"].update({"path": corpus(tmp_path / "small", 10), "dataload": "pad"})
    plan = json.loads(dry_run(tmp_path, raw, "--json"))
    assert plan["passes_over_data"] == pytest.approx(80)
    assert plan["warnings"] == [many_passes_warning(80)]
    text = " ".join(ANSI.sub("", dry_run(tmp_path, raw)).split())
    assert "warning: ≈ 80 passes over the data: the model will likely memorize it" in text
    assert "memorize" in plan_line({"total_steps": 200, "passes_over_data": 950.0})
    assert "memorize" not in plan_line({"total_steps": 200, "passes_over_data": 2.0})


@pytest.mark.parametrize("quant", ["int8", "nf4"])
def test_quantized_weights_count_at_their_logical_size_in_the_plan(train_setup, tmp_path, quant):
    _, _, raw = train_setup(7, "lora", epoch_steps=1, epoch_count=1)
    run(from_dict(raw))
    plain = read_events(tmp_path / "run" / "metrics.jsonl")[0]["plan"]
    raw["quant"] = quant
    raw["output"]["dir"] = str(tmp_path / f"run-{quant}")
    run(from_dict(raw))
    quantized = read_events(tmp_path / f"run-{quant}" / "metrics.jsonl")[0]["plan"]
    assert quantized["trainable_params"] == plain["trainable_params"]
    assert quantized["total_params"] == plain["total_params"]


@pytest.mark.parametrize("quant", ["int8", "nf4"])
def test_trainable_summary_counts_quantized_weights_at_their_logical_size(tiny_model, quant):
    from rwkv_tune import peft
    from rwkv_tune.model import load_model

    path = tiny_model(7, n_layer=2, n_embd=64, head_size=32, vocab_size=200)
    summaries = {}
    for q in ("none", quant):
        model = load_model(path)
        peft.apply(model, {"name": "lora", "r": 4, "quant": q})
        summaries[q] = peft.trainable_summary(model)
    assert summaries[quant]["quantized"] > 0
    assert summaries[quant]["total"] == summaries["none"]["total"]


def test_tokens_seen_count_real_tokens_not_padding(train_setup, tmp_path):
    _, _, raw = train_setup(7, "lora", epoch_steps=3, epoch_count=1)
    raw["data"]["ctx_len"] = 100  # batches are padded to 112 (a multiple of 16)
    run(from_dict(raw))
    events = read_events(tmp_path / "run" / "metrics.jsonl")
    plan, last = events[0]["plan"], [e for e in events if e["event"] == "step"][-1]
    assert last["tokens"] <= plan["total_tokens"]
