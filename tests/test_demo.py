"""`rwkv-tune demo --no-tui`: it completes offline on CPU, the loss falls, and the merged model loads in the
official `rwkv` pip runtime with our logits."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rwkv_tune import load_model
from rwkv_tune.data.tokenizer import get_tokenizer

ORACLE = Path(__file__).parent / "model" / "rwkv_pip_oracle.py"


def test_demo_trains_merges_and_its_model_loads_in_the_official_runtime(tmp_path):
    pytest.importorskip("rwkv")
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "rwkv_tune", "demo", "--no-tui", "--out", str(out), "--steps", "4"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    loss = re.search(r"loss (\d+\.\d+) → (\d+\.\d+)", done.stdout)
    assert loss, done.stdout
    before, after = map(float, loss.groups())
    assert after < before
    merged = out / "run" / "merged.pth"
    assert f"merged {merged} (verified)" in done.stdout
    assert "sample The lighthouse keeper" in done.stdout
    assert json.loads((out / "run" / "merge-report.json").read_text())["verification"]["checked"] is True

    tokens = get_tokenizer().encode("The lighthouse keeper wrote in her log every evening.")
    split = len(tokens) // 2
    oracle_out = tmp_path / "oracle.pt"
    subprocess.run([sys.executable, str(ORACLE), str(merged), "7", json.dumps(tokens), str(split), str(oracle_out)],
                   check=True, capture_output=True, timeout=300)
    oracle = torch.load(oracle_out)
    model = load_model(merged).eval()
    with torch.no_grad():
        ours = model(torch.tensor([tokens]))[0]
    assert ours.shape == oracle["seq"].shape
    assert (ours - oracle["seq"]).abs().max().item() <= 1e-4
    assert (ours[-1] - oracle["split_last"]).abs().max().item() <= 1e-4


def test_demo_refuses_an_out_folder_it_did_not_make(tmp_path):
    from rwkv_tune.demo import clear_previous_run
    from rwkv_tune.errors import UserError

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "precious.txt").write_text("keep me")
    with pytest.raises(UserError, match="not from an earlier demo"):
        clear_previous_run(tmp_path)
    assert (tmp_path / "run" / "precious.txt").exists()
    (tmp_path / "demo.yaml").write_text("{}")
    clear_previous_run(tmp_path)  # an earlier demo's run is replaced, so its merged.pth cannot be reused
    assert not (tmp_path / "run").exists()


def test_demo_preset_fits_any_step_count(tmp_path):
    from rwkv_tune.demo import demo_preset
    from rwkv_tune.preset import from_dict

    for steps in (2, 3, 4, 7, 60):
        p = from_dict(demo_preset(tmp_path, tmp_path / "m.pth", tmp_path / "corpus", "disha", steps=steps))
        assert p.total_steps == steps
