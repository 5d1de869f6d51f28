"""`generate --prompt` reads \\n, \\t and \\\\ as a shell passes them (the README's example), and keeps other text."""

from __future__ import annotations

import subprocess

import pytest
from typer.testing import CliRunner

from rwkv_tune import load_model
from rwkv_tune.cli import app
from rwkv_tune.cli.generate import unescape_prompt
from rwkv_tune.data.tokenizer import get_tokenizer
from rwkv_tune.generate import Sampling, generate_text


@pytest.mark.parametrize(("typed", "meant"), [
    (r"User: hi\n\nAssistant:", "User: hi\n\nAssistant:"),
    (r"a\tb", "a\tb"),
    (r"C:\\new", "C:\\new"),
    (r"\\n stays a backslash and an n", "\\n stays a backslash and an n"),
    (r"héllo 日本語\n🙂 \x \q", "héllo 日本語\n🙂 \\x \\q"),
    ("a real\nnewline", "a real\nnewline"),
])
def test_unescape_prompt(typed, meant):
    assert unescape_prompt(typed) == meant


def test_the_readme_prompt_reaches_the_model_with_newlines(tiny_model):
    model_path = tiny_model(7, n_layer=2, n_embd=64, head_size=32, vocab_size=65536)
    typed = subprocess.run(["bash", "-c", 'printf %s "User: hi\\n\\nAssistant:"'], capture_output=True,
                           text=True).stdout  # exactly what the README's shell line passes
    assert typed == r"User: hi\n\nAssistant:"
    result = CliRunner().invoke(app, ["generate", str(model_path), "--prompt", typed, "--temperature", "0",
                                      "--max-tokens", "5"])
    assert result.exit_code == 0, result.output
    meant = "User: hi\n\nAssistant:"
    expected = "".join(generate_text(load_model(model_path).eval(), meant, Sampling(max_tokens=5, temperature=0)))
    assert result.stdout == meant + expected + "\n"
    assert f"prompt: {len(get_tokenizer().encode(meant))} tokens" in result.stderr
