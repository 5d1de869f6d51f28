"""The wizard asks what kind of training (SFT, preferences, rewards), takes the matching data, writes the objective."""

from __future__ import annotations

import json

import pytest
import typer
import yaml
from typer.testing import CliRunner

from rwkv_tune import wizard
from rwkv_tune.cli.init import init
from rwkv_tune.errors import ConfigError
from rwkv_tune.estimate import released_spec
from rwkv_tune.preset import load


@pytest.fixture(autouse=True)
def no_gpus(monkeypatch):
    monkeypatch.setattr(wizard, "detect_gpus", lambda: ())


def jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.fixture
def files(tmp_path):
    return {"pairs": jsonl(tmp_path / "pairs.jsonl", [{"prompt": "Q", "chosen": "a", "rejected": "b"}]),
            "prompts": jsonl(tmp_path / "prompts.jsonl", [{"prompt": "2+2=", "answer": "4"}]),
            "sft": jsonl(tmp_path / "chat.jsonl", [{"text": "hello"}])}


def test_the_kind_of_training_is_asked_after_the_model_and_shapes_the_data_question():
    state = wizard.State(spec=released_spec("0.4B"), answers={"model": "m.pth"})
    q = wizard.next_question(state)
    assert q.key == "objective" and q.message == "What kind of training?" and q.default == "sft"
    assert [c.value for c in q.choices] == ["sft", "dpo", "orpo", "grpo"]
    assert [c.title.split(":")[0] for c in q.choices] == ["SFT", "preferences", "preferences", "rewards"]
    data = wizard.next_question(wizard.answer(state, "objective", "rewards"))
    assert data.key == "data" and "Prompts" in data.message and "answer" in data.help
    assert "Preference pairs" in wizard.question("data", wizard.answer(state, "objective", "dpo")).message


@pytest.mark.parametrize(("objective", "data", "data_type"), [("dpo", "pairs", "pairs"), ("orpo", "pairs", "pairs"),
                                                              ("grpo", "prompts", "prompts")])
def test_each_objective_takes_its_data_and_writes_a_valid_preset(files, objective, data, data_type):
    state = wizard.State(spec=released_spec("0.4B"), answers={"model": "m.pth"})
    state = wizard.answer_many(state, {"objective": objective, "data": files[data]})
    raw = wizard.to_raw(state)
    assert raw["objective"]["type"] == objective and raw["data"]["type"] == data_type
    assert raw["output"]["dir"].startswith(f"runs/{objective}-")
    preset = wizard.build_preset(state)
    assert preset.objective.type == objective
    if objective == "grpo":
        assert preset.objective.rewards == ["exact_answer"]
    e = wizard.current_estimate(state)
    assert e.config.objective == objective


@pytest.mark.parametrize(("objective", "data"), [("dpo", "prompts"), ("grpo", "pairs"), ("dpo", "sft")])
def test_data_of_the_wrong_kind_is_refused_with_the_fix(files, objective, data):
    state = wizard.State(spec=released_spec("0.4B"), answers={"model": "m.pth", "objective": objective})
    with pytest.raises(ConfigError, match=f"{objective} trains on"):
        wizard.answer(state, "data", files[data])


def test_init_yes_objective_flag(tmp_path, files):
    from rwkv_tune.testing import make_model

    model = make_model(tmp_path / "tiny.pth", 7, 2, 64, 256)
    app = typer.Typer()
    app.command("init")(init)

    @app.callback()
    def _root() -> None:
        pass

    out = tmp_path / "dpo.yaml"
    r = CliRunner().invoke(app, ["init", "--yes", "--model", str(model), "--objective", "dpo", "--data",
                                 files["pairs"], "--method", "lora", "--out", str(out)])
    assert r.exit_code == 0, r.output
    preset = load(out)
    assert preset.objective.type == "dpo" and preset.data.type == "pairs"
    assert yaml.safe_load(out.read_text())["objective"]["type"] == "dpo"
    bad = CliRunner().invoke(app, ["init", "--yes", "--model", str(model), "--objective", "ppo", "--out",
                                   str(tmp_path / "x.yaml")])
    assert bad.exit_code == 2 and "objective" in bad.output
