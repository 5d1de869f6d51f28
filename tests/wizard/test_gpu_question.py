"""No fit verdict before the GPU is known, and training on this CPU gets a time measured here (issue 14)."""

import io
import re

import pytest
import typer
import yaml
from rich.console import Console
from typer.testing import CliRunner

from rwkv_tune import wizard
from rwkv_tune.cli.init import init
from rwkv_tune.spec import detect

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(autouse=True)
def no_gpus(monkeypatch):
    monkeypatch.setattr(wizard, "detect_gpus", lambda: ())


def init_yes(*args: str) -> str:
    app = typer.Typer()
    app.command("init")(init)

    @app.callback()
    def _root() -> None:
        pass

    r = CliRunner().invoke(app, ["init", "--yes", *args])
    assert r.exit_code == 0, r.output
    return ANSI.sub("", r.output)


def test_live_estimate_before_the_gpu_question_shows_memory_but_no_fit(tiny_model):
    from rwkv_tune.wizard.prompts import show_estimate

    model = tiny_model(7, n_layer=2, n_embd=64)
    state = wizard.State(spec=detect(model), answers={"model": str(model), "objective": "sft", "data": "d"})
    assert wizard.next_question(state).key == "gpu"
    out = io.StringIO()
    show_estimate(state, Console(file=out, width=200))
    text = out.getvalue()
    assert "VRAM ≈" in text and "after the GPU question" in text
    assert "fits" not in text and "tokens/s" not in text and "→" not in text


def test_gpu_question_offers_this_cpu():
    q = wizard.question("gpu", wizard.State())
    assert any(c.value == wizard.CPU and "this CPU" in c.title for c in q.choices)
    assert wizard.answer(wizard.State(), "gpu", "cpu").answers["gpu"] == wizard.CPU


def test_init_without_gpu_gives_no_verdict_on_a_card_and_no_time(tiny_model, tmp_path):
    out = init_yes("--model", str(tiny_model(7, n_layer=2, n_embd=64)), "--data", "d", "--out", str(tmp_path / "p.yaml"))
    assert "✓ fits" not in out and " s\n" not in out and "tokens/s" not in out
    assert "depends on the card" in out


def test_init_on_this_cpu_measures_the_time_here(tiny_model, tmp_path):
    target = tmp_path / "p.yaml"
    out = init_yes("--model", str(tiny_model(7, n_layer=2, n_embd=64)), "--data", "d", "--gpu", "cpu",
                   "--epoch-steps", "10", "--epoch-count", "1", "--out", str(target))
    line = next(s for s in out.splitlines() if "measured on this CPU" in s)
    assert re.search(r"~[\d,.]+ tokens/s; [\d,]+ tokens → \d", line), line
    assert "fits" not in out
    preset = yaml.safe_load(target.read_text())
    assert preset["train"]["device"] == "cpu" and preset["train"].get("precision") == "fp32"
    assert "measured on this CPU" in target.read_text()
