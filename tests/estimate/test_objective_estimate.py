"""The estimate counts what DPO/ORPO/GRPO add: two sequences per pair, GRPO's group and its sampling, the
reference's copy of the trained weights under full fine-tuning; `estimate PRESET` and `train --dry-run` show it."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from typer.testing import CliRunner

from rwkv_tune.cli import app
from rwkv_tune.errors import ConfigError
from rwkv_tune.estimate import estimate

ANSI = re.compile(r"\x1b\[[0-9;]*m")
SAME = {"size": "1.5B", "micro_bsz": 2, "ctx_len": 1024}


def test_dpo_holds_more_activations_than_sft_at_the_same_batch():
    sft, dpo = estimate(**SAME), estimate(**SAME, objective="dpo")
    assert dpo.breakdown["activations"] > 1.9 * sft.breakdown["activations"]
    assert dpo.breakdown["logits_loss"] > sft.breakdown["logits_loss"]
    assert dpo.vram.tokens_per_step == 2 * sft.vram.tokens_per_step
    assert estimate(**SAME, objective="orpo").vram.tokens_per_step == dpo.vram.tokens_per_step


def test_full_fine_tuning_dpo_counts_the_reference_copy_and_adapters_almost_nothing():
    sft, dpo = estimate(**SAME, method="full"), estimate(**SAME, method="full", objective="dpo")
    params = dpo.vram.params.total
    assert sft.breakdown["reference_weights"] == 0
    assert dpo.breakdown["reference_weights"] * 2**30 == pytest.approx(params * 4, rel=0.01)  # fp32 starting values
    orpo = estimate(**SAME, method="full", objective="orpo")  # ORPO has no reference policy
    assert orpo.breakdown["reference_weights"] == 0
    lora = estimate(**SAME, objective="dpo")
    assert 0 < lora.breakdown["reference_weights"] < 0.01  # only the time/ln vectors trained beside LoRA


def test_grpo_counts_the_group_and_its_sampling():
    small = estimate(**SAME, objective="grpo", group_size=4, max_new_tokens=256)
    large = estimate(**SAME, objective="grpo", group_size=16, max_new_tokens=256)
    assert large.vram.tokens_per_step == 16 * (1024 + 256) and large.total_gib > small.total_gib
    assert "generate" in large.vram.phases
    with pytest.raises(ConfigError, match="objective"):
        estimate(**SAME, objective="ppo")


def test_estimate_preset_and_train_dry_run_show_the_objective(tmp_path):
    from rwkv_tune.testing import make_model

    model = make_model(tmp_path / "tiny.pth", 7, 2, 64, 256)
    raw = {"model": {"path": str(model)}, "data": {"path": "pairs.jsonl", "ctx_len": 128},
           "train": {"micro_bsz": 2}, "objective": {"type": "dpo", "beta": 0.1}}
    dpo, sft = tmp_path / "dpo.yaml", tmp_path / "sft.yaml"
    dpo.write_text(yaml.safe_dump(raw))
    sft.write_text(yaml.safe_dump({k: v for k, v in raw.items() if k != "objective"}))
    runner = CliRunner()
    shown = runner.invoke(app, ["estimate", str(dpo)])
    assert shown.exit_code == 0, shown.output
    assert "dpo (chosen + rejected: 4 sequences per micro-batch)" in " ".join(ANSI.sub("", shown.output).split())
    as_json = [json.loads(runner.invoke(app, ["estimate", str(p), "--json"]).stdout) for p in (dpo, sft)]
    assert as_json[0]["config"]["objective"] == "dpo" and as_json[1]["config"]["objective"] == "sft"
    assert as_json[0]["breakdown"]["activations"] > as_json[1]["breakdown"]["activations"]
    dry = [runner.invoke(app, ["train", str(p), "--dry-run", "--json"]) for p in (dpo, sft)]
    plans = [json.loads(d.stdout) for d in dry]
    assert plans[0]["objective"] == "dpo" and plans[0]["vram_gib"] > plans[1]["vram_gib"]
    text = ANSI.sub("", runner.invoke(app, ["train", str(dpo), "--dry-run"]).output)
    assert "objective dpo" in text
