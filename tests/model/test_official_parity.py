"""Our logits against the official `rwkv` pip runtime (the test oracle), on tiny v5/v6/v7 models."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rwkv_tune import load_model

pytest.importorskip("rwkv")
ORACLE = Path(__file__).with_name("rwkv_pip_oracle.py")


def run_oracle(model_path: Path, version: int, tokens: list[int], split: int, tmp_path: Path) -> dict:
    out = tmp_path / "oracle.pt"
    subprocess.run([sys.executable, str(ORACLE), str(model_path), str(version), json.dumps(tokens), str(split), str(out)],
                   check=True, capture_output=True, timeout=300)
    return torch.load(out)


@pytest.mark.parametrize(
    "version,kwargs",
    [
        (7, dict(n_layer=2, n_embd=128, head_size=64, layer0_v=True)),
        (7, dict(n_layer=3, n_embd=96, head_size=32, layer0_v=False)),
        (6, dict(n_layer=2, n_embd=128, head_size=64)),
        (6, dict(n_layer=2, n_embd=64, head_size=32)),
        (5, dict(n_layer=2, n_embd=128, head_size=64)),
    ],
)
def test_logits_match_official_runtime(tiny_model, tmp_path, version, kwargs):
    path = tiny_model(version, vocab_size=500, **kwargs)
    tokens = torch.randint(0, 500, (64,), generator=torch.Generator().manual_seed(1)).tolist()
    oracle = run_oracle(path, version, tokens, 23, tmp_path)

    model = load_model(path).eval()
    with torch.no_grad():
        ours = model(torch.tensor([tokens]))[0]
        first, state = model(torch.tensor([tokens[:23]]), return_state=True)
        rest = model(torch.tensor([tokens[23:]]), state)[0]

    assert ours.shape == oracle["seq"].shape
    assert (ours - oracle["seq"]).abs().max().item() <= 1e-4
    assert (rest[-1] - oracle["split_last"]).abs().max().item() <= 1e-4
    # a carried state continues the sequence exactly as if it had never been split
    assert (torch.cat([first[0], rest]) - ours).abs().max().item() <= 1e-4
