"""`rwkv-tune data prepare` and `data inspect` through the CLI."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from rwkv_tune.cli import app
from rwkv_tune.data.tokenizer import get_tokenizer

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
runner = CliRunner()
TEXTS = ["Hello world", "第二个文档 with emoji 🙂", "a much longer document " * 20]


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, ANSI.sub("", result.output)


def read_items(prefix):
    idx = open(f"{prefix}.idx", "rb").read()
    assert idx[:9] == b"MMIDIDX\x00\x00" and idx[17] == 8
    n = struct.unpack_from("<Q", idx, 18)[0]
    sizes = struct.unpack_from(f"<{n}i", idx, 34)
    pointers = struct.unpack_from(f"<{n}q", idx, 34 + 4 * n)
    data = open(f"{prefix}.bin", "rb").read()
    return [list(struct.unpack_from(f"<{s}H", data, p)) for s, p in zip(sizes, pointers, strict=True)]


@pytest.fixture
def corpus(tmp_path):
    p = tmp_path / "docs.jsonl"
    p.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in TEXTS), encoding="utf-8")
    return p


def test_prepare_writes_binidx_with_eod_and_reports_stats(tmp_path, corpus):
    code, out = run("data", "prepare", corpus, "--out", tmp_path / "out" / "d", "--ctx-len", "16",
                    "--micro-bsz", "2", "--json")
    assert code == 0, out
    info = json.loads(out)
    tok = get_tokenizer()
    items = read_items(tmp_path / "out" / "d")
    assert items == [tok.encode(t) + [0] for t in TEXTS]
    lengths = sorted(len(i) for i in items)
    assert info["documents"] == 3 and info["tokens"] == sum(lengths)
    assert info["length"]["max"] == lengths[-1] and info["length"]["min"] == lengths[0]
    assert info["over_ctx_len"] == sum(n > 17 for n in lengths)
    assert info["epoch_steps"] == 2
    assert info["formats"] == {str(corpus): "jsonl"}
    meta = json.loads((tmp_path / "out" / "d.meta.json").read_text())
    assert meta["eod"] is True and meta["stats"]["documents"] == 3


def test_prepare_no_eod_and_table_output(tmp_path, corpus):
    code, out = run("data", "prepare", corpus, "-o", tmp_path / "n", "--no-eod")
    assert code == 0, out
    assert "documents" in out and "epoch_steps" in out and "wrote" in out
    assert read_items(tmp_path / "n") == [get_tokenizer().encode(t) for t in TEXTS]


def test_prepare_shuffle_is_seeded_permutation(tmp_path):
    p = tmp_path / "many.jsonl"
    p.write_text("".join(json.dumps({"text": f"doc number {i}"}) + "\n" for i in range(20)), encoding="utf-8")
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        assert run("data", "prepare", p, "-o", tmp_path / name, "--shuffle", "--seed", seed, "--json")[0] == 0
    a, b, c = (read_items(tmp_path / n) for n in "abc")
    plain = [get_tokenizer().encode(f"doc number {i}") + [0] for i in range(20)]
    assert a == b and a != c and a != plain
    assert sorted(a) == sorted(plain)


def test_prepare_chat_and_inspect_highlights_learned_tokens(tmp_path):
    p = tmp_path / "chat.jsonl"
    p.write_text(json.dumps({"messages": [{"role": "user", "content": "Capital of France?"},
                                          {"role": "assistant", "content": "Paris."}]}) + "\n", encoding="utf-8")
    assert run("data", "prepare", p, "-o", tmp_path / "c")[0] == 0
    code, out = run("data", "inspect", tmp_path / "c", "--json")
    assert code == 0, out
    info = json.loads(out)
    assert info["loss_mask"] == "qa"
    assert info["samples"][0]["text"] == "User: Capital of France?\n\nAssistant: Paris."
    assert info["samples"][0]["learned_text"] == " Paris.⟨eod⟩"
    code, out = run("data", "inspect", tmp_path / "c.bin", "--loss-mask", "pad")
    assert code == 0 and "Capital of France?" in out and "learned" in out


def test_inspect_renders_learned_tokens_in_green(tmp_path):
    from rich.console import Console

    from rwkv_tune.data.binidx import Documents
    from rwkv_tune.data.preview import LEARN_STYLE, preview, render
    from rwkv_tune.data.sampling import Batches

    tok = get_tokenizer()
    ids = tok.encode("User: Q\n\nAssistant: A") + [0]
    b = Batches(Documents.from_lists([ids]), mode="pad", ctx_len=64, micro_bsz=1, loss_mask="sft", shuffle=False)
    (sample,) = preview(b, 1)
    text = render(sample, tok)
    green = "".join(text.plain[s.start:s.end] for s in text.spans if s.style == LEARN_STYLE)
    assert green == " A⟨eod⟩"
    console = Console(force_terminal=True, color_system="standard", width=200)
    with console.capture() as cap:
        console.print(text)
    assert "\x1b[1;32m A" in cap.get()


def test_inspect_raw_file_with_ctx_len_reports_cut(tmp_path, corpus):
    code, out = run("data", "inspect", corpus, "--ctx-len", "8", "-n", "3")
    assert code == 0, out
    flat = " ".join(out.split())
    assert "longer than ctx_len 8" in flat
    cut = len(get_tokenizer().encode(TEXTS[2])) + 1 - 9
    assert f"{cut} tokens beyond ctx_len are cut" in flat


@pytest.mark.parametrize(("args", "message"), [
    (["data", "prepare", "missing.jsonl", "-o", "x"], "input missing.jsonl does not exist"),
    (["data", "prepare", "bad.jsonl", "-o", "x"], "bad.jsonl:2: invalid JSON"),
    (["data", "prepare", "bad.jsonl", "-o", "x", "--format", "csv"], "format 'csv' is not known"),
    (["data", "prepare", "empty.jsonl", "-o", "x"], "no documents found"),
    (["data", "prepare", "d.meta.json", "-o", "d"], "output d.meta.json is also an input"),
    (["data", "inspect", "nothing"], "data nothing not found"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": \n', encoding="utf-8")
    (tmp_path / "empty.jsonl").write_text('{"text": ""}\n', encoding="utf-8")
    (tmp_path / "d.meta.json").write_text('[{"text": "x"}]', encoding="utf-8")
    code, out = run(*args)
    assert code == 2
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert not (tmp_path / "x.bin").exists()


def test_skip_invalid_reports_skipped(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": \n', encoding="utf-8")
    code, out = run("data", "prepare", tmp_path / "bad.jsonl", "-o", tmp_path / "o", "--skip-invalid", "--json")
    assert code == 0
    info = json.loads(out.strip().splitlines()[-1])
    assert info["documents"] == 1 and info["invalid_skipped"] == 1


def test_data_cli_module_imports_no_numpy_or_torch():
    code = ("import sys, rwkv_tune.cli.data; "
            "print(any(m in sys.modules for m in ('torch', 'numpy', 'pyrwkv_tokenizer')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_prepare_custom_roles_and_template_drive_the_qa_mask(tmp_path):
    p = tmp_path / "chat.jsonl"
    p.write_text(json.dumps({"messages": [{"role": "user", "content": "2+2?"},
                                          {"role": "assistant", "content": "4"}]}) + "\n", encoding="utf-8")
    code, out = run("data", "prepare", p, "-o", tmp_path / "c", "--roles", "user=Q,assistant=A",
                    "--template", "<{role}>\\n{content}", "--json")
    assert code == 0, out
    code, out = run("data", "inspect", tmp_path / "c", "--json")
    sample = json.loads(out)["samples"][0]
    assert sample["text"] == "<Q>\n2+2?\n\n<A>\n4"
    assert sample["learned_text"] == "\n4⟨eod⟩"
    code, out = run("data", "prepare", p, "-o", tmp_path / "d", "--roles", "bot=B")
    assert code == 2 and "--roles entry 'bot=B' is not ROLE=NAME" in out
