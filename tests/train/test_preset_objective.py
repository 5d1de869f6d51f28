"""The preset's objective: section: validated by ObjectiveConfig, its mistakes collected with the rest."""

import pytest

from rwkv_tune.errors import ConfigError, ConfigErrors
from rwkv_tune.preset import dump, from_dict, key_help


def base(**sections):
    return {"model": {"path": "m.pth"}, "data": {"path": "d.jsonl"}, **sections}


def messages(raw) -> list[str]:
    with pytest.raises((ConfigError, ConfigErrors)) as info:
        from_dict(raw)
    errors = getattr(info.value, "errors", [info.value])
    return [str(e) for e in errors]


def test_default_is_sft_and_a_dpo_section_round_trips():
    assert from_dict(base()).objective.type == "sft"
    p = from_dict(base(objective={"type": "dpo", "beta": 0.2}, data={"path": "d.jsonl", "type": "pairs"}))
    assert p.objective_config.type == "dpo" and p.objective_config.beta == 0.2
    import yaml

    again = from_dict(yaml.safe_load(dump(p)))
    assert again.objective == p.objective
    grpo = from_dict(base(objective={"type": "grpo", "rewards": ["exact_answer", {"fn": "mine:score", "weight": 0.5}]}))
    assert [r.label for r in grpo.objective_config.rewards] == ["exact_answer", "mine:score"]
    assert "dpo" in key_help("objective.type")


def test_objective_mistakes_are_collected_with_the_others():
    found = messages(base(objective={"type": "dpo", "bta": 1, "group_size": 1}, train={"micro_bsz": 0}))
    assert len(found) == 2, found
    assert any("train.micro_bsz" in m for m in found)
    assert any("objective.bta" in m and "beta" in m and "objective.group_size" in m for m in found)


@pytest.mark.parametrize(("objective", "data_type", "needle"), [
    ({"type": "dpo"}, "prompts", "objective.type = dpo reads pairs data"),
    ({"type": "orpo"}, "jsonl", "Set data.type: pairs"),
    ({"type": "grpo", "rewards": ["exact_answer"]}, "pairs", "objective.type = grpo reads prompts data"),
    ({"type": "sft"}, "pairs", "data.type = pairs needs objective.type dpo or orpo"),
    ({"type": "grpo"}, "prompts", "grpo needs at least one reward"),
])
def test_objective_and_data_type_cross_checks_name_the_fix(objective, data_type, needle):
    found = messages(base(objective=objective, data={"path": "d.jsonl", "type": data_type}))
    assert len(found) == 1 and needle in found[0], found


def test_objectives_are_refused_under_zero3_and_infctx():
    pairs = {"path": "d.jsonl", "type": "pairs"}
    zero3 = messages(base(objective={"type": "dpo"}, data=pairs,
                          train={"strategy": "deepspeed_stage_3", "devices": 2}))
    assert len(zero3) == 1 and "ZeRO-3" in zero3[0] and "deepspeed_stage_2" in zero3[0]
    infctx = messages(base(objective={"type": "dpo"}, data={**pairs, "ctx_len": 1024}, train={"train_type": "infctx"}))
    assert len(infctx) == 1 and "infctx" in infctx[0]


def test_a_refused_objective_does_not_add_a_cross_check_about_sft():
    found = messages(base(objective={"type": "dpoo"}, data={"path": "d.jsonl", "type": "pairs"}))
    assert len(found) == 1 and "did you mean 'dpo'" in found[0], found
