import subprocess
import sys

import pytest

from rwkv_tune.errors import ConfigError
from rwkv_tune.objectives.config import ObjectiveConfig, RewardSpec


def test_defaults_are_sft_and_the_documented_values():
    cfg = ObjectiveConfig.from_dict(None)
    assert (cfg.type, cfg.beta, cfg.group_size, cfg.max_new_tokens) == ("sft", 0.1, 8, 256)
    assert (cfg.temperature, cfg.top_p, cfg.kl_beta, cfg.clip_eps, cfg.rewards) == (1.0, 1.0, 0.04, 0.2, ())
    assert ObjectiveConfig.from_dict("dpo").type == "dpo"


def test_rewards_short_and_long_forms_round_trip():
    cfg = ObjectiveConfig.from_dict({"type": "grpo", "rewards": [
        "exact_answer", {"fn": "my_rewards:score", "weight": 0.5}, {"name": "regex", "pattern": r"\d+$"},
        {"name": "length", "target": 40}, "other_mod:fn"]})
    assert cfg.rewards[0] == RewardSpec(name="exact_answer")
    assert cfg.rewards[1] == RewardSpec(fn="my_rewards:score", weight=0.5)
    assert cfg.rewards[4].fn == "other_mod:fn"
    assert ObjectiveConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["rewards"][:2] == ["exact_answer", {"fn": "my_rewards:score", "weight": 0.5}]


def test_every_problem_is_collected_into_one_error():
    with pytest.raises(ConfigError) as err:
        ObjectiveConfig.from_dict({"type": "gpro", "beta": -1, "group_size": 1, "top_p": 1.5, "clip": 0.2,
                                   "temperature": 0, "rewards": [{"name": "regex"}, {"fn": "no colon"}]})
    text = str(err.value)
    for piece in ("'gpro'", "did you mean 'grpo'", "objective.beta = -1.0 must be > 0", "group_size = 1 must be ≥ 2",
                  "top_p = 1.5 must be ≤ 1", "objective.clip is not", "clip_eps", "temperature = 0.0 must be > 0",
                  "rewards[0]: the regex reward needs a pattern", "rewards[1]: fn = 'no colon'"):
        assert piece in text, piece
    assert "8 problems" in text


def test_grpo_needs_a_reward_and_pairs_objectives_refuse_prompt_data():
    with pytest.raises(ConfigError, match="at least one reward"):
        ObjectiveConfig.from_dict({"type": "grpo"})
    with pytest.raises(ConfigError, match="unknown key 'wieght'"):
        ObjectiveConfig.from_dict({"type": "grpo", "rewards": [{"name": "format", "wieght": 2}]})
    with pytest.raises(ConfigError, match="reads pairs data, but data.type is 'prompts'"):
        ObjectiveConfig.from_dict("dpo").check_data_type("prompts")
    ObjectiveConfig.from_dict("orpo").check_data_type("auto")


def test_the_config_imports_without_torch():
    code = "import sys, rwkv_tune.objectives as o; o.ObjectiveConfig.from_dict('dpo'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
