"""`output.export: rwkv-peft`: files that RWKV-PEFT's merge (integer --lora_alpha, scale alpha/r) merges to our
weights, MERGE.txt with the exact command for every method; export refusals when the preset is read."""

import shlex
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from rwkv_tune import load_model, peft
from rwkv_tune.checkpoint import load_state_dict
from rwkv_tune.cli import app
from rwkv_tune.errors import ConfigError
from rwkv_tune.merge import merge
from rwkv_tune.preset import from_dict
from rwkv_tune.testing import make_model
from rwkv_tune.train.export import export_rwkv_peft

VOCAB = 200


@pytest.fixture
def base(tmp_path):
    return make_model(tmp_path / "base.pth", 7, 2, 64, VOCAB, 32, seed=1)


def our_adapter(base, path, cfg):
    """Apply a method (default train_parts time+ln, so dense tensors travel too), perturb, save."""
    model = load_model({k: v.clone() for k, v in load_state_dict(base).items()})
    params = peft.apply(model, cfg)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return peft.save_adapter(model, path)


def merge_command(folder):
    """The RWKV-PEFT command line in MERGE.txt as (script, {flag: value})."""
    line = next(s for s in (folder / "MERGE.txt").read_text().splitlines() if s.startswith("python merge/"))
    words = shlex.split(line)
    return words[1], dict(zip(words[2::2], words[3::2], strict=True))


def rwkv_peft_lora_merge(base_sd, checkpoint, lora_alpha: int):
    """RWKV-PEFT's documented LoRA merge (rwkv-peft.md §7): copy every key over the base, then for each X.weight
    with X.lora_A/B: W + B @ A * alpha / r, r from B's second dim, alpha an integer."""
    assert isinstance(lora_alpha, int)
    out = {k: v.float().clone() for k, v in base_sd.items()}
    for key, value in checkpoint.items():
        if not key.endswith((".lora_A", ".lora_B")):
            out[key] = value.float()
    for key in list(out):
        module = key[: -len(".weight")]
        if key.endswith(".weight") and module + ".lora_A" in checkpoint:
            a, b = checkpoint[module + ".lora_A"].float(), checkpoint[module + ".lora_B"].float()
            out[key] = out[key] + b @ a * (lora_alpha / b.shape[1])
    return out


@pytest.mark.parametrize("cfg,alpha", [({"r": 8, "alpha": 16, "rslora": True}, 8),  # 16·√8 = 45.25…: folded
                                       ({"r": 8, "alpha": 12.5}, 8),  # folded
                                       ({"r": 8, "alpha": 16}, 16)])  # an integer already: B as trained
def test_rwkv_peft_export_merges_with_merge_txt_integer_alpha(cfg, alpha, base, tmp_path):
    adapter = our_adapter(base, tmp_path / "adapter.safetensors", {"name": "lora", **cfg})
    merge(base, adapter, tmp_path / "ours.pth", dtype="fp32", verify=False)
    out = tmp_path / "rwkv-peft"
    written = export_rwkv_peft(adapter, out, 0, base=str(base))
    assert written.name == "rwkv-0.pth"
    script, flags = merge_command(out)
    assert script == "merge/merge.py" and flags["--type"] == "lora" and flags["--base_model"] == str(base)
    assert flags["--lora_checkpoint"] == str(written.resolve()) and flags["--lora_alpha"] == str(alpha)
    theirs = rwkv_peft_lora_merge(load_state_dict(base), torch.load(written), int(flags["--lora_alpha"]))
    ours = torch.load(tmp_path / "ours.pth")
    assert list(theirs) == list(ours)
    for key in ours:
        assert (ours[key] - theirs[key]).abs().max() <= 1e-5, key
    # and rwkv-tune's own reading of the export, with the alpha MERGE.txt gives
    merge(base, written, tmp_path / "again.pth", alpha=alpha, dtype="fp32", verify=False)
    again = torch.load(tmp_path / "again.pth")
    assert all((again[k] - ours[k]).abs().max() <= 1e-5 for k in ours)


@pytest.mark.parametrize("cfg,script,files", [
    ({"name": "pissa", "r": 4}, "merge/merge.py", ("--lora_checkpoint", "--lora_init")),
    ({"name": "bone", "r": 8}, "merge/merge_disha.py", ("--peft_checkpoint",)),
    ({"name": "state"}, "merge/merge_state.py", ("--state_checkpoint",)),
    ({"name": "full"}, "merge/merge.py", ("--lora_checkpoint",)),
])
def test_merge_txt_for_every_method(cfg, script, files, base, tmp_path):
    adapter = our_adapter(base, tmp_path / "adapter.safetensors", cfg)
    out = tmp_path / "rwkv-peft"
    export_rwkv_peft(adapter, out, 3, base=str(base))
    got, flags = merge_command(out)
    assert got == script and flags["--base_model"] == str(base) and "--lora_alpha" not in flags
    for flag in files:
        assert Path(flags[flag]).is_file(), flag
    assert "rwkv-tune merge" in (out / "MERGE.txt").read_text()


def preset(method, export, **extra):
    return {"model": {"path": "base.pth"}, "method": {"name": method, **extra}, "data": {"path": "corpus"},
            "output": {"export": export}}


@pytest.mark.parametrize("method,export,extra,words", [
    ("bat", "rwkv-peft", {}, "mode bat"),
    ("miss", "rwkv-peft", {"mode": "mini", "mini_r": 4}, "mode mini"),
    ("lora", "peft", {}, "train_parts"),
    ("state", "peft", {}, "method state"),
    ("full", "peft", {}, "method full"),
    ("state", "gguf", {}, "gguf cannot hold method state"),
])
def test_export_refused_when_the_preset_is_read(method, export, extra, words):
    with pytest.raises(ConfigError, match=words):
        from_dict(preset(method, export, **extra))


def test_export_accepted_where_the_format_holds_it():
    from_dict(preset("bat", "peft", train_parts=[]))
    from_dict(preset("pissa", "peft", train_parts=[]))
    from_dict(preset("bone", "rwkv-peft"))
    from_dict(preset("state", "rwkv-peft"))
    from_dict(preset("lora", "gguf"))


def test_bat_rwkv_peft_export_fails_dry_run_in_one_line(tmp_path):
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump(preset("bat", "rwkv-peft")))
    result = CliRunner().invoke(app, ["train", str(path), "--dry-run"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "output.export = rwkv-peft" in result.output and result.output.strip().count("\n") == 0
