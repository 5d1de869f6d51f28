"""wandb and tensorboard receive the step and eval scalars; missing packages give one-line errors."""

import sys
import types

import pytest

from rwkv_tune.errors import ConfigError
from rwkv_tune.preset import from_dict
from rwkv_tune.train import run


def fake_wandb(logged):
    module = types.ModuleType("wandb")

    class Run:
        def log(self, values, step):
            logged.append((step, values))

        def finish(self, exit_code=None):
            logged.append("finished")

    module.init = lambda **kwargs: Run()
    return module


def test_wandb_gets_step_scalars(train_setup, monkeypatch):
    logged = []
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb(logged))
    _, _, raw = train_setup(7, "lora", epoch_steps=2, epoch_count=1)
    raw["output"]["wandb"] = "my-project"
    run(from_dict(raw))
    assert [step for step, _ in logged[:-1]] == [1, 2] and logged[-1] == "finished"
    assert {"step/loss", "step/lr", "step/tokens_per_s", "step/grad_norm"} <= set(logged[0][1])


def test_missing_tracker_package_is_one_line(train_setup, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    _, _, raw = train_setup(7, "lora")
    raw["output"]["wandb"] = "my-project"
    with pytest.raises(ConfigError, match="wandb package is not installed"):
        run(from_dict(raw))
