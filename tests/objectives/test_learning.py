"""DPO and GRPO learn on CPU with a tiny v7 model and LoRA, through the small driver."""

import sys
import types

import pytest
import torch
from objective_data import marker_pairs, random_prompts

from rwkv_tune.errors import UserError
from rwkv_tune.objectives.config import ObjectiveConfig
from rwkv_tune.objectives.driver import ObjectiveDriver
from rwkv_tune.objectives.factory import build_objective
from rwkv_tune.objectives.logprobs import sequence_logprobs
from rwkv_tune.objectives.pairs import pair_batch
from rwkv_tune.objectives.reference import reference_logprobs

LORA = {"name": "lora", "r": 8, "alpha": 16}


def test_dpo_reaches_preference_accuracy_on_held_out_pairs(fresh_model):
    """After marker 11 the answer 9 is preferred, after 12 the answer 7; held-out prompts are new."""
    model = fresh_model(LORA)
    dpo = build_objective(ObjectiveConfig.from_dict({"type": "dpo", "beta": 0.1}), model, marker_pairs(256, seed=1),
                          batch_size=8, seed=0)
    held_out = pair_batch(marker_pairs(64, seed=2))
    tokens, response = held_out["tokens"], held_out["response"]
    reference = reference_logprobs(dpo.reference, tokens, response)

    def accuracy(preference_of_base: bool = False) -> float:
        with torch.no_grad():
            logp = sequence_logprobs(model, tokens, response)[0]
        if preference_of_base:
            margin = logp[:64] - logp[64:]
        else:  # DPO's implicit reward margin
            margin = (logp[:64] - reference[:64]) - (logp[64:] - reference[64:])
        return float((margin > 0).float().mean())

    assert accuracy(preference_of_base=True) < 0.8  # the base does not already prefer the chosen answers
    driver = ObjectiveDriver(model, dpo, lr=3e-3)
    scores = []
    for _ in range(20):  # at most 200 steps
        driver.run(10)
        scores.append(accuracy())
        if scores[-1] >= 0.95:
            break
    assert scores[-1] >= 0.9, scores
    assert dpo.evaluate(model, marker_pairs(64, seed=2))["pref_accuracy"] == scores[-1]
    assert accuracy(preference_of_base=True) >= 0.9


def test_grpo_raises_a_toy_reward(fresh_model, tmp_path, monkeypatch):
    """Reward 1 when the completion's first token is 'c' (id 100, about 1% likely at first)."""
    rewards = types.ModuleType("toy_first_token")
    rewards.first_is_c = lambda prompt, completion, record: 1.0 if completion.startswith("c") else 0.0
    monkeypatch.setitem(sys.modules, "toy_first_token", rewards)
    model = fresh_model(LORA)
    cfg = ObjectiveConfig.from_dict({"type": "grpo", "group_size": 8, "max_new_tokens": 3,
                                     "rewards": [{"fn": "toy_first_token:first_is_c"}]})
    grpo = build_objective(cfg, model, random_prompts(16, seed=0), seed=0, run_dir=tmp_path)
    history: list[dict] = []

    def learned(fields: dict) -> bool:
        history.append(fields)
        return len(history) >= 10 and sum(f["reward_mean"] for f in history[-10:]) / 10 >= 0.8

    ObjectiveDriver(model, grpo, lr=1e-2).run(120, on_step=learned)  # at most 120 steps
    start = sum(f["reward_mean"] for f in history[:5]) / 5
    assert start < 0.2
    assert sum(f["reward_mean"] for f in history[-10:]) / 10 >= 0.8, [round(f["reward_mean"], 2) for f in history]
    assert len((tmp_path / "rollouts.jsonl").read_text().splitlines()) == len(history)


def test_run_objective_trains_from_files_into_a_run_directory(tmp_path):
    import json

    from rwkv_tune.objectives.driver import run_objective
    from rwkv_tune.runs import read_events
    from rwkv_tune.testing import make_model

    model = make_model(tmp_path / "tiny.pth", n_layer=1, n_embd=64, head_size=32, vocab_size=400)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q{i}:", "chosen": "x", "rejected": "y"}) + "\n"
                            for i in range(6)))
    out = tmp_path / "run"
    run_objective(model, data, out, objective={"type": "dpo", "beta": 0.2},
                  method={"name": "lora", "r": 4, "alpha": 8}, steps=3, lr=1e-2, batch_size=2)
    steps = [e for e in read_events(out / "metrics.jsonl") if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3]
    assert {"loss", "reward_margin", "pref_accuracy", "objective"} <= set(steps[0])
    assert (out / "adapter.safetensors").exists() and (out / "checkpoints" / "step-00000003" / "objective.pt").exists()
    driver = run_objective(model, data, out, objective="dpo", method={"name": "lora", "r": 4, "alpha": 8}, steps=2,
                           lr=1e-2, batch_size=2, resume=out / "checkpoints" / "step-00000003")
    assert driver.step == 5
    with pytest.raises(UserError, match="no 'complete' marker"):
        run_objective(model, data, out, objective="dpo", steps=1, resume=out / "checkpoints" / "step-00000009")
