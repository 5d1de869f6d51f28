"""One schema: every choice list is accepted or refused alike by train, train --dry-run, estimate, PEFT and the
wizard; and a preset's mistakes are all reported in one run."""

from __future__ import annotations

import re
from dataclasses import asdict

import pytest
import yaml
from typer.testing import CliRunner

from rwkv_tune import wizard
from rwkv_tune.cli import app
from rwkv_tune.errors import ConfigError, ConfigErrors
from rwkv_tune.estimate import released_spec
from rwkv_tune.peft import PeftConfig
from rwkv_tune.preset import CHOICE_KEYS, choices, from_dict, load
from rwkv_tune.testing import make_model

ANSI = re.compile(r"\x1b\[[0-9;]*m")
BAD = "bogus"
CASES = [(key, value, True) for key in CHOICE_KEYS for value in choices(key)] + [(key, BAD, False)
                                                                                   for key in CHOICE_KEYS]
# The wizard's question for each preset key it asks about.
WIZARD_KEYS = {"quant": "quant", "method.name": "method", "train.precision": "precision",
               "train.strategy": "strategy", "train.train_type": "train_type"}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("m") / "tiny.pth", 7, 2, 64, 256)


def preset_with(model, key: str, value) -> dict:
    raw = {"model": {"path": str(model)}, "method": {"name": "lora", "r": 16}, "data": {"path": "d.jsonl"}}
    if key == "quant":
        raw["quant"] = value
    else:
        section, name = key.split(".")
        raw.setdefault(section, {})[name] = value
    if key == "output.export" and value == "peft":  # HF peft folders hold adapter weights only, no dense parts
        raw["method"]["train_parts"] = []
    # each objective with the data it reads (and grpo with a reward), so only the walked value can be wrong
    objective = {"pairs": "dpo", "prompts": "grpo"}.get(value) if key == "data.type" else value
    if key in ("data.type", "objective.type") and objective in ("dpo", "orpo", "grpo"):
        raw["objective"] = {"type": objective, "rewards": ["exact_answer"] if objective == "grpo" else []}
    return raw


def cli(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, ANSI.sub("", result.output)


def test_every_choice_list_is_walked():
    assert {"quant", "method.name", "method.mode", "data.type", "data.dataload", "data.loss_mask",
            "train.lr_schedule", "train.precision", "train.strategy", "train.op", "train.train_type"} <= set(CHOICE_KEYS)
    assert "fp4" in choices("quant")


@pytest.mark.parametrize(("key", "value", "valid"), CASES, ids=[f"{k}={v}" for k, v, _ in CASES])
def test_a_choice_is_accepted_or_refused_alike_everywhere(tmp_path, model_path, key, value, valid):
    raw = preset_with(model_path, key, value)
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump(raw))
    verdicts = {}
    try:  # train: the preset as `rwkv-tune train` loads it
        preset = load(path)
        verdicts["train"] = True
    except ConfigError:
        preset, verdicts["train"] = None, False
    code, out = cli("train", path, "--dry-run", "--json")
    verdicts["train --dry-run"] = code == 0
    assert code in (0, 2), out
    code, out = cli("estimate", path, "--json")
    verdicts["estimate"] = code == 0
    assert code in (0, 2), out
    if key in ("quant", "method.name", "method.mode"):  # what PEFT applies
        method = asdict(preset.method) if preset else raw["method"]
        try:
            PeftConfig.from_dict({**method, "quant": raw.get("quant", "none")})
            verdicts["peft"] = True
        except ConfigError:
            verdicts["peft"] = False
    if key in WIZARD_KEYS:
        state = wizard.State(spec=released_spec("0.1B", 7), answers={"model": "m.pth", "data": "d.jsonl"})
        try:
            wizard.answer(state, WIZARD_KEYS[key], value)
            verdicts["wizard"] = True
        except ConfigError:
            verdicts["wizard"] = False
    assert verdicts == dict.fromkeys(verdicts, valid), (key, value, verdicts)


def test_three_mistakes_are_three_errors_in_one_dry_run(tmp_path, model_path):
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"path": str(model_path)}, "data": {"path": "d.jsonl", "ctx_lenn": 512},
        "train": {"micro_bsz": 0, "lr_int": 1e-4}}))
    code, out = cli("train", path, "--dry-run")
    assert code == 2
    lines = out.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error:") for line in lines), out
    assert "unknown key 'data.ctx_lenn'. Did you mean 'ctx_len'?" in out
    assert "unknown key 'train.lr_int'. Did you mean 'lr_init'?" in out
    assert "train.micro_bsz = 0 is below the minimum 1. Use a value ≥ 1." in out
    assert "Traceback" not in out


def test_two_bad_overrides_are_both_reported(tmp_path, model_path):
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump(preset_with(model_path, "quant", "none")))
    code, out = cli("train", path, "--dry-run", "--set", "train.precision=bf61", "--set", "train.seedd=1",
                    "--set", "lr_init")
    lines = out.strip().splitlines()
    assert code == 2 and len(lines) == 3, out
    assert "train.precision = 'bf61' is not one of" in out and "Did you mean 'bf16'?" in out
    assert "unknown key 'train.seedd'. Did you mean 'seed'?" in out
    assert "--set 'lr_init' has no '='" in out


def test_cross_field_mistakes_are_collected_but_not_about_refused_values():
    raw = {"model": {"path": "m.pth"}, "data": {"path": "d", "ctx_len": 1000, "dataload": "only"},
           "train": {"micro_bsz": 2, "train_type": "infctx", "chunk_ctx": 300, "op": "cuda", "precision": "fp16"}}
    with pytest.raises(ConfigErrors) as info:
        from_dict(raw)
    text = "\n".join(info.value.lines())
    assert len(info.value.errors) == 3, text
    assert "train.op = cuda needs train.precision = bf16" in text and "not a multiple of train.chunk_ctx" in text
    assert "dataload = only" in text
    # a refused value falls back to its default, which must not raise a second, confusing error
    with pytest.raises(ConfigError) as one:
        from_dict({"model": {"path": "m.pth"}, "data": {"path": "d"}, "train": {"lr_init": "fast", "lr_final": 1e-3}})
    assert not isinstance(one.value, ConfigErrors) and "train.lr_init = 'fast'" in one.value.message


def test_a_method_section_the_preset_accepts_is_one_peft_accepts():
    for method, ok in [({"name": "bat", "mode": "mini"}, False), ({"name": "bat", "dropout": 0.1}, False),
                       ({"name": "lora", "targets": ["att.kee"]}, False), ({"name": "lora", "layers": "3-1"}, False),
                       ({"name": "lora", "alpha": 0}, False), ({"name": "miss", "mode": "mini", "mini_r": 4}, True)]:
        raw = {"model": {"path": "m.pth"}, "data": {"path": "d"}, "method": method}
        try:
            from_dict(raw)
            preset_ok = True
        except ConfigError:
            preset_ok = False
        try:
            PeftConfig.from_dict(method)
            peft_ok = True
        except ConfigError:
            peft_ok = False
        assert preset_ok == peft_ok == ok, method


@pytest.mark.parametrize("command", ["estimate", "init", "merge"])
def test_cli_help_lists_the_schema_quantisations(command):
    code, out = cli(command, "--help")
    assert code == 0 and all(q in out for q in choices("quant")), out


def test_an_error_keeps_its_brackets(tmp_path, model_path):
    """The fix `Write a YAML list, e.g. [time, ln]` is text, not console markup that vanishes."""
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump({"model": {"path": str(model_path)}, "data": {"path": "d.jsonl"},
                                    "method": {"train_parts": 5}}))
    code, out = cli("train", path, "--dry-run")
    assert code == 2 and "[time, ln]" in out, out
