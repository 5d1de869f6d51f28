"""DeepSpeed ZeRO-1/2 with two CPU ranks (gloo) follows the single-process loss curve."""

import pytest
import yaml
from typer.testing import CliRunner

from rwkv_tune.cli import app
from rwkv_tune.preset import from_dict
from rwkv_tune.runs import read_events
from rwkv_tune.train import run

pytest.importorskip("deepspeed")


def step_losses(metrics):
    return [e["loss"] for e in read_events(metrics) if e["event"] == "step"]


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 2])
def test_two_cpu_ranks_match_one_process(train_setup, tmp_path, stage, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    _, _, raw = train_setup(7, "lora", micro_bsz=4, epoch_steps=4, epoch_count=1, lr_init=1e-2, lr_final=1e-2,
                            lr_schedule="constant")
    single = run(from_dict({**raw, "output": {"dir": str(tmp_path / "single")}}))

    two = {**raw, "train": {**raw["train"], "micro_bsz": 2, "devices": 2, "strategy": f"deepspeed_stage_{stage}"},
           "output": {"dir": str(tmp_path / "two")}}
    preset = tmp_path / "two.yaml"
    preset.write_text(yaml.safe_dump(two))
    result = CliRunner().invoke(app, ["train", str(preset), "--no-tui"])
    assert result.exit_code == 0, result.output[-3000:]
    losses = step_losses(tmp_path / "two" / "metrics.jsonl")
    assert len(losses) == len(single.losses) == 4
    # same samples per step (rank r reads every world-th sample), same global mean: equal up to fp reordering
    for a, b in zip(losses, single.losses, strict=True):
        assert abs(a - b) <= 1e-4 * abs(b), (losses, single.losses)
    assert (tmp_path / "two" / "adapter.safetensors").exists()
