"""The dashboard's default merge: a child process runs rwkv_tune.merge and relays per-tensor progress."""

from __future__ import annotations

from pathlib import Path

import pytest

from rwkv_tune.tui.merging import MergeRequest, MergeUnavailable, subprocess_merge


@pytest.mark.slow
def test_subprocess_merge_of_a_tiny_lora_run(tmp_path):
    torch = pytest.importorskip("torch")
    from rwkv_tune import load_model, peft
    from rwkv_tune.testing import make_model

    base = make_model(tmp_path / "base.pth", version=7, n_layer=2, n_embd=64, vocab_size=200, head_size=32)
    model = load_model(base)
    peft.apply(model, {"name": "lora", "r": 4, "alpha": 8, "train_parts": []})
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(0, 0.02)  # a trained-looking adapter, so the merge changes weights
    run = tmp_path / "run"
    run.mkdir()
    adapter = peft.save_adapter(model, run / "adapter.safetensors")
    seen: list[tuple[int, int]] = []
    result = subprocess_merge(MergeRequest(run, str(base), str(adapter), str(run / "merged.pth")),
                              lambda done, total: seen.append((done, total)))
    assert result["verified"] is True and Path(result["path"]) == run / "merged.pth"
    assert (run / "merged.pth").exists() and (run / "merge-report.json").exists()
    assert seen and seen[-1][0] == seen[-1][1] == result["report"]["out"]["tensors"]


def test_subprocess_merge_failure_is_one_line(tmp_path):
    with pytest.raises(MergeUnavailable, match="base model .*missing.pth does not exist"):
        subprocess_merge(MergeRequest(tmp_path, str(tmp_path / "missing.pth"), str(tmp_path / "a.safetensors"),
                                      str(tmp_path / "merged.pth")), lambda done, total: None)
