"""DPO, ORPO and GRPO through `rwkv-tune train preset.yaml --no-tui`: the same loop, run directory and checkpoints."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from objective_presets import objective_preset
from safetensors.torch import load_file
from typer.testing import CliRunner

from rwkv_tune.cli import app
from rwkv_tune.runs import read_events

ANSI = re.compile(r"\x1b\[[0-9;]*m")
TOY = {"fn": "toy_rewards:starts_lowercase"}


def train(tmp_path, raw: dict, *extra: str, name: str = "preset.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["train", str(path), "--no-tui", *extra])
    return result.exit_code, ANSI.sub("", result.output)


def events(raw: dict, kind: str) -> list[dict]:
    return [e for e in read_events(Path(raw["output"]["dir"]) / "metrics.jsonl") if e["event"] == kind]


def test_dpo_reaches_held_out_preference_accuracy(tmp_path):
    raw = objective_preset(tmp_path, {"type": "dpo", "beta": 0.1}, steps=10, epochs=2)
    code, out = train(tmp_path, raw)
    assert code == 0, out
    steps, evals = events(raw, "step"), events(raw, "eval")
    assert [e["step"] for e in evals] == [10, 20]
    assert steps[0]["pref_accuracy"] == 0.0 and abs(steps[0]["loss"] - 0.6931) < 1e-3  # policy = reference at first
    assert evals[-1]["pref_accuracy"] >= 0.9, evals
    assert {"reward_margin", "reward_chosen", "reward_rejected"} <= set(steps[-1])
    assert "pref_acc" in out  # the plain printer shows the objective's fields


def test_orpo_trains_and_evaluates(tmp_path):
    raw = objective_preset(tmp_path, {"type": "orpo", "beta": 0.5}, steps=8)
    code, out = train(tmp_path, raw)
    assert code == 0, out
    steps = events(raw, "step")
    assert steps[-1]["loss"] < steps[0]["loss"] and "log_odds_ratio" in steps[0]
    assert "pref_accuracy" in events(raw, "eval")[-1]


@pytest.mark.parametrize(("method", "lr"), [("lora", 3e-3), ("pissa", 3e-3), ("bone", 3e-3), ("bat", 3e-3),
                                            ("state", 0.3), ("full", 1e-3)])
def test_dpo_with_every_method(tmp_path, method, lr):
    raw = objective_preset(tmp_path, {"type": "dpo"}, method=method, steps=6, lr=lr, micro_bsz=4)
    raw["data"]["eval_every"] = 0
    if method == "bat":
        raw["method"]["r"] = 16
    code, out = train(tmp_path, raw)
    assert code == 0, out
    losses = [e["loss"] for e in events(raw, "step")]
    assert len(losses) == 6 and sum(losses[-2:]) / 2 < 0.69, (method, losses)


@pytest.mark.parametrize("quant", ["int8", "nf4"])
def test_dpo_on_a_quantized_base(tmp_path, quant):
    pytest.importorskip("bitsandbytes")
    raw = objective_preset(tmp_path, {"type": "dpo"}, steps=6, micro_bsz=4)
    raw["quant"], raw["data"]["eval_every"] = quant, 0
    code, out = train(tmp_path, raw)
    assert code == 0, out
    losses = [e["loss"] for e in events(raw, "step")]
    assert sum(losses[-2:]) / 2 < 0.69, losses


def test_grpo_raises_the_toy_reward_and_logs_each_group(tmp_path):
    raw = objective_preset(tmp_path, {"type": "grpo", "group_size": 8, "max_new_tokens": 3, "rewards": [TOY]},
                           steps=60, lr=1e-2, micro_bsz=1)
    code, out = train(tmp_path, raw)
    assert code == 0, out
    rewards = [e["reward_mean"] for e in events(raw, "step")]
    assert sum(rewards[:5]) / 5 < 0.3
    assert sum(rewards[-10:]) / 10 >= 0.8, [round(r, 2) for r in rewards]
    step = events(raw, "step")[-1]
    assert {"kl", "clip_fraction", "completion_length", "reward/toy_rewards:starts_lowercase/mean"} <= set(step)
    lines = [json.loads(line) for line in (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
    assert [line["group"] for line in lines] == list(range(1, 61))
    assert len(lines[0]["completions"]) == 8 and len(lines[0]["rewards"]) == 8
    assert "reward" in out


def test_grpo_killed_and_resumed_ends_with_the_same_adapter(tmp_path):
    grpo = {"type": "grpo", "group_size": 4, "max_new_tokens": 3, "rewards": [TOY]}
    reference = objective_preset(tmp_path, grpo, steps=12, lr=1e-2, micro_bsz=1, save_every_steps=3,
                                 accumulate_grad_batches=2)
    reference["output"]["dir"] = str(tmp_path / "reference")
    code, out = train(tmp_path, reference, name="reference.yaml")
    assert code == 0, out

    killed = {**reference, "output": {"dir": str(tmp_path / "killed")}}
    path = tmp_path / "killed.yaml"
    path.write_text(yaml.safe_dump(killed))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rwkv_tune", "train", str(path), "--no-tui"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if any(e["step"] >= 7 for e in events(killed, "step")):
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert max(e["step"] for e in events(killed, "checkpoint")) in (6, 9)

    code, out = train(tmp_path, killed, "--resume", "auto", name="killed.yaml")
    assert code == 0, out
    ours, theirs = load_file(tmp_path / "killed" / "adapter.safetensors"), load_file(
        tmp_path / "reference" / "adapter.safetensors")
    assert ours.keys() == theirs.keys()
    assert max(float((ours[k] - theirs[k]).abs().max()) for k in ours) <= 1e-6
    lines = (tmp_path / "killed" / "rollouts.jsonl").read_text().splitlines()
    assert [json.loads(line)["group"] for line in lines] == list(range(1, 25))  # 12 steps × 2 groups, none twice
    assert lines == (tmp_path / "reference" / "rollouts.jsonl").read_text().splitlines()


def test_a_reward_function_that_raises_exits_2_naming_it_and_the_record(tmp_path):
    raw = objective_preset(tmp_path, {"type": "grpo", "group_size": 2, "max_new_tokens": 2,
                                      "rewards": [{"fn": "toy_rewards:explodes"}]}, steps=2, micro_bsz=1)
    code, out = train(tmp_path, raw)
    assert code == 2, out
    line = " ".join(out.split())
    assert "toy_rewards:explodes" in line and "ValueError: no answer here" in line and "prompt record" in line
    assert "'answer': 'a'" in line
    assert events(raw, "error")[-1]["kind"] == "user"


def test_pairs_data_for_grpo_is_refused_before_training(tmp_path):
    raw = objective_preset(tmp_path, {"type": "dpo"}, steps=2)
    raw["objective"] = {"type": "grpo", "rewards": [TOY]}
    raw["data"]["type"] = "pairs"
    code, out = train(tmp_path, raw)
    assert code == 2 and "objective.type = grpo reads prompts data" in out, out


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Every test here runs torch on one thread (`one_thread` in tests/conftest.py)."""


def test_sft_on_a_pairs_file_says_which_objective_reads_it(tmp_path):
    raw = objective_preset(tmp_path, {"type": "dpo"}, steps=2)
    raw["objective"] = {"type": "sft"}
    code, out = train(tmp_path, raw)
    assert code == 2 and "holds preference pairs" in out and "objective.type: dpo" in out, out


@pytest.mark.slow
def test_dpo_on_two_deepspeed_cpu_ranks(tmp_path, monkeypatch):
    """Each rank draws its own pairs (seed + rank); gradients average; rank 0 writes the events."""
    pytest.importorskip("deepspeed")
    monkeypatch.delenv("RANK", raising=False)
    raw = objective_preset(tmp_path, {"type": "dpo"}, steps=4, micro_bsz=2, devices=2, strategy="deepspeed_stage_1")
    raw["data"]["eval_every"] = 0
    code, out = train(tmp_path, raw)
    assert code == 0, out[-3000:]
    losses = [e["loss"] for e in events(raw, "step")]
    assert len(losses) == 4 and abs(losses[0] - 0.6931) < 1e-3 and losses[-1] < losses[0], losses
    assert (tmp_path / "run" / "adapter.safetensors").exists()


def test_records_longer_than_ctx_len_are_cut_with_a_warning(tmp_path):
    from rwkv_tune.objectives.pairs import Pair, Prompt
    from rwkv_tune.train.objective_steps import fit_to_context

    pairs, cut = fit_to_context([Pair(tuple(range(10, 20)), (1, 2, 0), (3, 0)), Pair((5,), (6,), (7,))], 8)
    assert cut == 1 and pairs[0] == Pair(tuple(range(15, 20)), (1, 2, 0), (3, 0)) and pairs[1] == Pair((5,), (6,), (7,))
    (prompt,), cut = fit_to_context([Prompt("p", tuple(range(30)), {}, 0)], 8)
    assert cut == 1 and prompt.ids == tuple(range(22, 30))
    raw = objective_preset(tmp_path, {"type": "dpo"}, steps=2, micro_bsz=2)
    raw["data"]["ctx_len"], raw["data"]["eval_every"] = 10, 0  # the prompts are 14 tokens
    code, out = train(tmp_path, raw)
    assert code == 0, out
    assert "256 of 256 records" in " ".join(e["message"] for e in events(raw, "warning"))
