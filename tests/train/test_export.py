"""`output.export: rwkv-peft` files merge to exactly the weights our own adapter merges to."""

import pytest
import torch

from rwkv_tune.merge import merge
from rwkv_tune.preset import from_dict
from rwkv_tune.train import run


@pytest.mark.parametrize("method,extra", [("lora", {"rslora": True}), ("pissa", {}), ("bone", {})])
def test_exported_rwkv_peft_adapter_merges_like_ours(train_setup, tmp_path, method, extra):
    base, _, raw = train_setup(7, method, epoch_steps=2, epoch_count=2, lr_init=1e-2, lr_final=1e-2)
    raw["method"].update(extra)
    raw["output"]["export"] = "rwkv-peft"
    result = run(from_dict(raw))
    exported = result.adapter.parent / "rwkv-peft"
    assert sorted(p.name for p in exported.glob("rwkv-*.pth")) == ["rwkv-0.pth", "rwkv-1.pth"]  # as RWKV-PEFT
    keys = torch.load(exported / "rwkv-1.pth").keys()
    assert any(k.endswith(".disha" if method == "bone" else ".lora_A") for k in keys)

    merge(base, result.adapter, tmp_path / "ours.pth", verify=False)
    kwargs = {}
    if method == "lora":
        command = next(s for s in (exported / "MERGE.txt").read_text().splitlines() if s.startswith("python "))
        kwargs["alpha"] = int(command.split("--lora_alpha ")[1].split()[0])
    if method == "pissa":
        kwargs["pissa_init"] = exported / "init_pissa.pth"
    merge(base, exported / "rwkv-1.pth", tmp_path / "theirs.pth", verify=False, **kwargs)
    a, b = torch.load(tmp_path / "ours.pth"), torch.load(tmp_path / "theirs.pth")
    assert list(a) == list(b)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_peft_export_folder_merges_like_ours(train_setup, tmp_path):
    base, _, raw = train_setup(7, "lora", epoch_steps=2, epoch_count=1, lr_init=1e-2, lr_final=1e-2)
    raw["method"]["train_parts"] = []
    raw["output"]["export"] = "peft"
    result = run(from_dict(raw))
    folder = result.adapter.parent / "peft"
    assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
    merge(base, result.adapter, tmp_path / "ours.pth", verify=False)
    report = merge(base, folder, tmp_path / "theirs.pth", verify=False)
    assert report.adapter["format"] == "hf-peft" and report.fingerprint_match is True
    a, b = torch.load(tmp_path / "ours.pth"), torch.load(tmp_path / "theirs.pth")
    assert list(a) == list(b)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
