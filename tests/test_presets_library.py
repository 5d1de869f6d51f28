"""The shipped presets (every one validates and fits its model) and `rwkv-tune presets list | show | copy`."""

from __future__ import annotations

import json
import re

import pytest
import typer
import yaml
from typer.testing import CliRunner

from rwkv_tune.cli import presets as presets_cmd
from rwkv_tune.estimate import estimate, released_spec
from rwkv_tune.preset import check_against_spec, from_dict, load
from rwkv_tune.presets_library import available, copy, find, render
from rwkv_tune.resources import presets_dir

ANSI = re.compile(r"\x1b\[[0-9;]*m")
SHIPPED = sorted(presets_dir().glob("*.yaml"))
NAME = re.compile(r"^v(?P<version>[567])-(?P<size>[0-9.]+B)-(?P<method>lora|pissa|miss|bat|state|full)"
                  r"(?:-(?P<quant>int8|nf4))?(?:-(?P<objective>dpo|orpo|grpo))?$")


def run(*args: str):
    app = typer.Typer()
    app.add_typer(presets_cmd.app, name="presets")

    @app.callback()
    def _root() -> None:
        pass

    return CliRunner().invoke(app, ["presets", *args], terminal_width=200)


def plain(result) -> str:
    return ANSI.sub("", result.output)


def test_the_library_covers_the_issue():
    names = [p.stem for p in SHIPPED]
    assert 20 <= len(names) <= 40
    parsed = [NAME.match(n) for n in names]
    assert all(parsed), [n for n, m in zip(names, parsed, strict=True) if not m]
    have = {(m["version"], m["size"]) for m in parsed}
    for want in [("7", "0.1B"), ("7", "0.4B"), ("7", "1.5B"), ("7", "2.9B"), ("6", "1.6B"), ("6", "3B"), ("6", "7B")]:
        assert want in have
    assert {m["method"] for m in parsed} >= {"lora", "pissa", "miss", "bat", "state"}
    assert {m["quant"] for m in parsed} >= {None, "int8", "nf4"}
    for size in ("0.1B", "0.4B", "1.5B", "2.9B"):  # preference and reward training for every v7 size
        assert {f"v7-{size}-lora-dpo", f"v7-{size}-lora-grpo"} <= set(names)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_preset_validates_and_matches_its_name(path):
    preset = load(path)
    m = NAME.match(path.stem)
    spec = released_spec(m["size"], int(m["version"]))
    check_against_spec(preset, spec)
    assert preset.model.spec["n_layer"] == spec.n_layer and preset.model.spec["n_embd"] == spec.n_embd
    assert preset.quant == (m["quant"] or "none")
    assert preset.objective.type == (m["objective"] or "sft")
    method = {"bat": "miss"}.get(m["method"], m["method"])
    assert preset.method_name == method and (m["method"] != "bat" or preset.method.mode == "bat")
    lr = (preset.train.lr_init, preset.train.lr_final)
    assert lr == (1.0, 0.01) if method == "state" else 1e-5 <= lr[1] < lr[0] <= 1e-4
    assert preset.output.dir == f"runs/{path.stem}"
    text = path.read_text()
    assert text.startswith("# RWKV-") and "# the base model" in text  # a description and comments
    # the estimator can price it and it fits the card its first line names
    e = estimate(spec, method=preset.method_name, mode=preset.method.mode, rank=preset.method.r, quant=preset.quant,
                 ctx_len=preset.data.ctx_len, micro_bsz=preset.train.micro_bsz, objective=preset.objective.type,
                 group_size=preset.objective.group_size, max_new_tokens=preset.objective.max_new_tokens)
    card = int(re.search(r"fits (\d+) GB cards", text.splitlines()[0])[1])
    assert any(g.name.endswith(f"{card}GB") for g in e.gpus_fit)
    # the renderer reproduces it (what `init` writes is the same shape as what ships)
    assert from_dict(yaml.safe_load(render(preset))).to_dict() == preset.to_dict()


def test_list_table_and_json():
    r = run("list")
    assert r.exit_code == 0, r.output
    out = plain(r)
    for info in available():
        assert info.name in out
    assert "v7-1.5B-lora-nf4" in out and "RWKV-7 1.5B" in out and "nf4" in out
    r = run("list", "--json")
    data = json.loads(r.stdout)["presets"]
    assert len(data) == len(SHIPPED)
    bat = next(d for d in data if d["name"] == "v7-0.4B-bat")
    assert bat["method"] == "miss bat r64" and bat["model"] == "RWKV-7 0.4B" and bat["ctx_len"] == 1024
    assert 1 < bat["vram_gib"] < 6 and bat["fits"]
    assert data[0]["name"].startswith("v7-0.1B") and data[-1]["name"].startswith("v6-7B")  # v7 first, small first
    big = next(d for d in data if d["name"] == "v6-7B-lora")
    assert big["vram_gib"] > next(d for d in data if d["name"] == "v6-7B-lora-nf4")["vram_gib"]


def test_show_prints_the_file_and_unknown_names_suggest():
    r = run("show", "v7-0.1B-state")
    assert r.exit_code == 0 and r.stdout == (presets_dir() / "v7-0.1B-state.yaml").read_text()
    assert run("show", "v7-0.1B-state.yaml").stdout == r.stdout
    r = run("show", "v7-0.1B-lroa")
    assert r.exit_code == 2
    lines = [line for line in plain(r).splitlines() if line.strip()]
    assert len(lines) == 1 and "v7-0.1B-lora" in lines[0]


def test_copy_writes_the_file_and_refuses_to_overwrite(tmp_path):
    dest = tmp_path / "preset.yaml"
    r = run("copy", "v6-7B-lora-nf4", str(dest))
    assert r.exit_code == 0, r.output
    assert dest.read_text() == (presets_dir() / "v6-7B-lora-nf4.yaml").read_text()
    assert "model.path and data.path" in plain(r)
    dest.write_text("my edits\n")
    r = run("copy", "v7-0.1B-lora", str(dest))
    assert r.exit_code == 2 and "--force" in plain(r) and dest.read_text() == "my edits\n"
    r = run("copy", "v7-0.1B-lora", str(dest), "--force")
    assert r.exit_code == 0 and load(dest).method.r == 32


def test_copy_with_model_and_data_keeps_the_comments(tmp_path):
    r = run("copy", "v7-2.9B-state-nf4", str(tmp_path), "--model", "my models/x.pth", "--data", "corpus/train")
    assert r.exit_code == 0, r.output
    dest = tmp_path / "v7-2.9B-state-nf4.yaml"  # a folder gets NAME.yaml
    p = load(dest)
    assert p.model.path == "my models/x.pth" and p.data.path == "corpus/train"
    text = dest.read_text()
    assert "path: my models/x.pth" in text and "# binidx prefix" in text and text.startswith("# RWKV-7 2.9B")
    assert "rwkv-tune train" in plain(r)


def test_library_functions_without_the_cli(tmp_path):
    assert find("v7-0.4B-miss").method == "miss bone r64"
    with pytest.raises(Exception, match="no shipped preset"):
        find("nothing-like-it")
    out = copy("v7-0.4B-lora", tmp_path / "a" / "b.yaml")
    assert load(out).data.ctx_len == 1024


def test_copy_works_without_bitsandbytes(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    out = copy("v6-7B-lora-nf4", tmp_path / "p.yaml", model="m.pth", data="d")
    assert yaml.safe_load(out.read_text())["quant"] == "nf4"  # written as shipped; only training needs bitsandbytes
