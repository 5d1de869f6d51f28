import pytest

from rwkv_tune.errors import ConfigError, UserError
from rwkv_tune.objectives.config import ObjectiveConfig
from rwkv_tune.objectives.rewards import build_rewards, score


def rewards_of(*specs, search_path=None):
    return build_rewards(ObjectiveConfig.from_dict({"type": "grpo", "rewards": list(specs)}).rewards, search_path)


def test_builtin_rewards():
    exact, regex, length, fmt = rewards_of("exact_answer", {"name": "regex", "pattern": r"\d+$"},
                                           {"name": "length", "target": 10}, "format")
    record = {"answer": " Paris "}
    assert exact("q", "paris", record, "r0") == 1.0
    assert exact("q", "Let me think.\nThe capital is...\nParis\n", record, "r0") == 1.0
    assert exact("q", "steps #### paris", record, "r0") == 1.0
    assert exact("q", "London", record, "r0") == 0.0 and exact("q", "Paris", {}, "r0") == 0.0
    assert (regex("q", "it is 42", {}, "r0"), regex("q", "42 it is", {}, "r0")) == (1.0, 0.0)
    assert (length("q", "x" * 10, {}, "r0"), length("q", "x" * 15, {}, "r0"), length("q", "x" * 40, {}, "r0")) == \
        (1.0, 0.5, 0.0)
    assert fmt("q", "<think>hmm</think>\n<answer>4</answer>", {}, "r0") == 1.0
    assert fmt("q", "4", {}, "r0") == 0.0


def test_user_functions_load_from_the_search_path_and_are_weighted(tmp_path):
    (tmp_path / "my_rewards_mod.py").write_text(
        "def score(prompt, completion, record):\n    return len(completion) + record['bonus']\n"
        "def broken(prompt, completion, record):\n    return record['missing']\n"
        "def wrong_type(prompt, completion, record):\n    return 'high'\n")
    terms = rewards_of({"fn": "my_rewards_mod:score", "weight": 0.5}, "exact_answer", search_path=tmp_path)
    totals, per_term = score(terms, "q", ["ab", "4"], {"bonus": 1, "answer": "4"}, where="prompt record 0")
    assert per_term == {"my_rewards_mod:score": [3.0, 2.0], "exact_answer": [0.0, 1.0]}
    assert totals == [1.5, 2.0]

    broken, = rewards_of("my_rewards_mod:broken", search_path=tmp_path)
    with pytest.raises(UserError) as err:
        score([broken], "q", ["x"], {"prompt": "2+2", "answer": "4"}, where="prompt record 17")
    assert "reward function 'my_rewards_mod:broken' raised KeyError" in str(err.value)
    assert "prompt record 17 {'prompt': '2+2', 'answer': '4'}" in str(err.value)

    wrong, = rewards_of("my_rewards_mod:wrong_type", search_path=tmp_path)
    with pytest.raises(UserError, match="'my_rewards_mod:wrong_type' returned 'high' on prompt record 3"):
        score([wrong], "q", ["x"], {}, where="prompt record 3")


def test_missing_modules_and_functions_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot import module 'no_such_reward_module'"):
        rewards_of("no_such_reward_module:score")
    (tmp_path / "few_rewards.py").write_text("x = 1\n")
    with pytest.raises(ConfigError, match="has no function 'score'"):
        rewards_of("few_rewards:score", search_path=tmp_path)
