"""`init` writes the loss mask the data suggests (chat → qa, prompt/response → sft), as `data prepare` does."""

import json

import pytest
import typer
import yaml
from typer.testing import CliRunner

from rwkv_tune import wizard
from rwkv_tune.cli.init import init
from rwkv_tune.data.detect import suggested_loss_mask

CHAT = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}


@pytest.fixture(autouse=True)
def no_gpus(monkeypatch):
    monkeypatch.setattr(wizard, "detect_gpus", lambda: ())


def init_yes(*args: str):
    app = typer.Typer()
    app.command("init")(init)

    @app.callback()
    def _root() -> None:
        pass

    return CliRunner().invoke(app, ["init", "--yes", *args])


def test_suggested_loss_mask_by_kind(tmp_path):
    chat, sft, text = tmp_path / "chat.jsonl", tmp_path / "sft.jsonl", tmp_path / "notes.txt"
    chat.write_text(json.dumps(CHAT) + "\n")
    sft.write_text(json.dumps({"prompt": "2+2?", "response": "4"}) + "\n")
    text.write_text("plain prose\n")
    assert [suggested_loss_mask(p) for p in (chat, sft, text, tmp_path / "missing")] == ["qa", "sft", "pad", "pad"]


def test_init_yes_writes_qa_for_chat_records(tiny_model, tmp_path):
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps(CHAT) + "\n")
    out = tmp_path / "preset.yaml"
    r = init_yes("--model", str(tiny_model(7, n_layer=2, n_embd=64)), "--data", str(data), "--out", str(out))
    assert r.exit_code == 0, r.output
    section = yaml.safe_load(out.read_text())["data"]
    assert section["loss_mask"] == "qa" and section.get("dataload", "pad") == "pad"


def test_init_yes_takes_the_mask_data_prepare_suggested(tiny_model, tmp_path):
    from rwkv_tune.cli import app

    raw = tmp_path / "chat.jsonl"
    raw.write_text((json.dumps(CHAT) + "\n") * 3)
    prepared = CliRunner().invoke(app, ["data", "prepare", str(raw), "--out", str(tmp_path / "chat")])
    assert prepared.exit_code == 0, prepared.output
    out = tmp_path / "preset.yaml"
    r = init_yes("--model", str(tiny_model(7, n_layer=2, n_embd=64)), "--data", str(tmp_path / "chat"),
                 "--out", str(out))
    assert r.exit_code == 0, r.output
    assert yaml.safe_load(out.read_text())["data"]["loss_mask"] == "qa"


def test_plain_text_keeps_pad(tiny_model, tmp_path):
    data = tmp_path / "notes.txt"
    data.write_text("plain prose\n")
    out = tmp_path / "preset.yaml"
    r = init_yes("--model", str(tiny_model(7, n_layer=2, n_embd=64)), "--data", str(data), "--out", str(out))
    assert r.exit_code == 0, r.output
    assert yaml.safe_load(out.read_text())["data"].get("loss_mask", "pad") == "pad"
