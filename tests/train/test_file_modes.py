"""Every file we write atomically gets the user's umask (0644 under umask 022), not mkstemp's 0600."""

import json
import os
import stat

import pytest
from typer.testing import CliRunner

from rwkv_tune.cli import app
from rwkv_tune.preset import from_dict
from rwkv_tune.runs import RunDir
from rwkv_tune.train import run
from rwkv_tune.train.finish import merge_run


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_train_merge_prepare_and_preset_files_are_0644_under_umask_022(train_setup, tmp_path, umask_022):
    _, _, raw = train_setup(7, "lora", epoch_steps=2, epoch_count=1)
    p = from_dict(raw)
    run(p)
    merge_run(p)
    rundir = RunDir(tmp_path / "run")
    written = [rundir.adapter, rundir.merged, rundir.merge_report, rundir.preset]
    checkpoint = rundir.latest_checkpoint()
    written += [checkpoint / "adapter.safetensors", checkpoint / "trainer.pt", checkpoint / "complete"]

    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"document {i}"}) + "\n" for i in range(5)))
    result = CliRunner().invoke(app, ["data", "prepare", str(corpus), "--out", str(tmp_path / "prepared" / "d")])
    assert result.exit_code == 0, result.output
    written += [tmp_path / "prepared" / f"d.{ext}" for ext in ("bin", "idx", "meta.json")]

    result = CliRunner().invoke(app, ["presets", "copy", "v7-0.1B-lora", str(tmp_path / "copied.yaml")])
    assert result.exit_code == 0, result.output
    written.append(tmp_path / "copied.yaml")

    modes = {str(path.relative_to(tmp_path)): oct(mode(path)) for path in written}
    assert set(modes.values()) == {"0o644"}, modes
