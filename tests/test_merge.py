"""`rwkv_tune.merge.merge` and `rwkv-tune merge`: verified official-layout output, RWKV-PEFT checkpoints,
safety (never overwrite an input, one-line errors), and the official `rwkv` runtime loading the result."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rwkv_tune import load_model, peft
from rwkv_tune.checkpoint import load_state_dict, save_state_dict
from rwkv_tune.cli import app
from rwkv_tune.errors import ConfigError, ModelFileError
from rwkv_tune.merge import MergeError, file_sha256, merge
from rwkv_tune.testing import make_model, make_state_dict

VOCAB = 200
ANSI = re.compile(r"\x1b\[[0-9;]*m")
ORACLE = Path(__file__).parent / "model" / "rwkv_pip_oracle.py"
IDX = torch.randint(0, VOCAB, (1, 16), generator=torch.Generator().manual_seed(3))
runner = CliRunner()


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def plain(text: str) -> str:
    return ANSI.sub("", text)


def trained_adapter(base_path: Path, out: Path, cfg: dict) -> Path:
    """Apply a method to the base, perturb its trainable tensors as training would, save the adapter."""
    model = load_model({k: v.clone() for k, v in load_state_dict(base_path).items()})
    params = peft.apply(model, cfg)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return peft.save_adapter(model, out)


@pytest.fixture
def files(tmp_path):
    base = make_model(tmp_path / "base.pth", 7, 2, 64, VOCAB, 32, seed=1)
    adapter = trained_adapter(base, tmp_path / "adapter.safetensors", {"name": "lora", "r": 8, "alpha": 16})
    return base, adapter


def test_merge_writes_verified_file_and_report(files, tmp_path):
    base, adapter = files
    base_sha = file_sha256(base)
    seen = []
    report = merge(base, adapter, tmp_path / "out" / "merged.pth", progress=lambda i, n, k: seen.append((i, n)))
    out = tmp_path / "out" / "merged.pth"
    assert seen[-1] == (len(load_state_dict(base)),) * 2
    merged, original = torch.load(out, weights_only=True), load_state_dict(base)
    assert list(merged) == list(original)
    assert all(merged[k].shape == v.shape and merged[k].dtype == v.dtype for k, v in original.items())
    saved = json.loads((tmp_path / "out" / "merge-report.json").read_text())
    assert saved["out"]["sha256"] == file_sha256(out) and saved["base"]["sha256"] == base_sha
    assert saved["adapter"]["method"] == "lora" and saved["adapter"]["config"]["alpha"] == 16
    assert saved["verification"]["checked"] and saved["verification"]["max_abs_diff"] < 1e-4
    assert saved["fingerprint_match"] is True and report.report_path.endswith("merge-report.json")
    assert file_sha256(base) == base_sha


def test_dtype_and_safetensors_output(files, tmp_path):
    base, adapter = files
    merge(base, adapter, tmp_path / "m.safetensors", dtype="bf16")
    merged = load_state_dict(tmp_path / "m.safetensors")
    assert {t.dtype for t in merged.values()} == {torch.bfloat16}
    assert sorted(merged) == sorted(load_state_dict(base))  # safetensors keeps keys sorted, not in order


def test_never_overwrites_an_input(files, tmp_path):
    base, adapter = files
    for out in (base, adapter, tmp_path / "." / "base.pth"):
        with pytest.raises(ConfigError, match="merge never overwrites an input"):
            merge(base, adapter, out)


def test_other_base_is_refused_then_forced(files, tmp_path):
    base, adapter = files
    other = make_model(tmp_path / "other.pth", 7, 2, 64, VOCAB, 32, seed=2)
    with pytest.raises(ModelFileError, match="trained on a different base model") as info:
        merge(other, adapter, tmp_path / "m.pth")
    assert "\n" not in str(info.value) and not (tmp_path / "m.pth").exists()
    report = merge(other, adapter, tmp_path / "m.pth", force=True)
    assert report.fingerprint_match is False and "--force" in report.notes[-1]

    wider = make_model(tmp_path / "wide.pth", 7, 2, 128, VOCAB, 32, seed=1)
    with pytest.raises(ModelFileError, match=r"adapter key 'blocks.0.att.receptance.lora_A' has shape \[8, 64\], "
                                             r"but base 'blocks.0.att.receptance.weight' \[128, 128\] needs \[8, 128\]"):
        merge(wider, adapter, tmp_path / "w.pth", force=True)


# ---------------------------------------------------------------- RWKV-PEFT checkpoints (documented key format)

def peft_file(path: Path, tensors: dict) -> Path:
    torch.save(tensors, path)
    return path


def test_rwkv_peft_lora_needs_alpha_and_merges(tmp_path):
    base_path = make_model(tmp_path / "base.pth", 7, 2, 64, VOCAB, 32, seed=1)
    base = load_state_dict(base_path)
    g = torch.Generator().manual_seed(0)
    ckpt = {"blocks.0.att.key.lora_A": torch.randn(4, 64, generator=g), "blocks.0.att.key.lora_B":
            torch.randn(64, 4, generator=g), "blocks.1.ffn.value.lora_A": torch.randn(4, 256, generator=g),
            "blocks.1.ffn.value.lora_B": torch.randn(64, 4, generator=g),
            "blocks.1.ln2.weight": torch.rand(64, generator=g)}  # a train_parts tensor
    path = peft_file(tmp_path / "rwkv-3.pth", ckpt)
    with pytest.raises(ConfigError, match="does not record lora_alpha. Pass --lora-alpha"):
        merge(base_path, path, tmp_path / "m.pth")
    report = merge(base_path, path, tmp_path / "m.pth", alpha=32)
    merged = torch.load(tmp_path / "m.pth", weights_only=True)
    want = base["blocks.0.att.key.weight"] + 8.0 * ckpt["blocks.0.att.key.lora_B"] @ ckpt["blocks.0.att.key.lora_A"]
    torch.testing.assert_close(merged["blocks.0.att.key.weight"], want)
    assert torch.equal(merged["blocks.1.ln2.weight"], ckpt["blocks.1.ln2.weight"])
    assert torch.equal(merged["blocks.0.att.value.weight"], base["blocks.0.att.value.weight"])
    assert report.adapter["format"] == "rwkv-peft" and report.verification["checked"]
    with pytest.raises(ConfigError, match="--r 8 does not match"):
        merge(base_path, path, tmp_path / "m.pth", alpha=32, r=8)


def test_rwkv_peft_pissa_with_prefixed_init(tmp_path):
    base_path = make_model(tmp_path / "base.pth", 6, 2, 64, VOCAB, 32, seed=1)
    base = load_state_dict(base_path)
    g = torch.Generator().manual_seed(1)
    k = "blocks.1.att.gate"
    a, b, a0, b0 = (torch.randn(s, generator=g) * 0.1 for s in ((4, 64), (64, 4), (4, 64), (64, 4)))
    path = peft_file(tmp_path / "rwkv-0.pth", {f"{k}.lora_A": a, f"{k}.lora_B": b})
    init = peft_file(tmp_path / "init_pissa.pth", {f"model.{k}.init_lora_A": a0, f"model.{k}.init_lora_B": b0})
    merge(base_path, path, tmp_path / "m.pth", pissa_init=init)
    merged = torch.load(tmp_path / "m.pth", weights_only=True)
    torch.testing.assert_close(merged[k + ".weight"], base[k + ".weight"] - b0 @ a0 + b @ a)


@pytest.mark.parametrize("mode", ["bone", "bat"])
def test_rwkv_peft_disha(mode, tmp_path):
    base_path = make_model(tmp_path / "base.pth", 7, 2, 64, VOCAB, 32, seed=1)
    w = load_state_dict(base_path)["blocks.0.ffn.key.weight"]  # [256, 64]
    g = torch.Generator().manual_seed(2)
    d = torch.randn((16, 256) if mode == "bone" else (64 // 16, 16, 16), generator=g) * 0.05
    merge(base_path, peft_file(tmp_path / "rwkv-1.pth", {"blocks.0.ffn.key.disha": d}), tmp_path / "m.pth")
    got = torch.load(tmp_path / "m.pth", weights_only=True)["blocks.0.ffn.key.weight"]
    want = w.clone()
    if mode == "bone":
        for i in range(64):
            want[:, i] += d[i % 16]
    else:  # RWKV-PEFT G1: one block per input block b, ΔW_{a,b} = W_{a,b}·D_b + D_b
        for a in range(256 // 16):
            for b in range(64 // 16):
                blk = w[a * 16:(a + 1) * 16, b * 16:(b + 1) * 16]
                want[a * 16:(a + 1) * 16, b * 16:(b + 1) * 16] += blk @ d[b] + d[b]
    torch.testing.assert_close(got, want)


def test_rwkv_peft_state_and_state_only_export(tmp_path):
    base_path = make_model(tmp_path / "base.pth", 6, 2, 64, VOCAB, 32, seed=1)
    states = {f"blocks.{i}.att.time_state": torch.randn(2, 32, 32) * 0.1 for i in range(2)}
    report = merge(base_path, peft_file(tmp_path / "rwkv-2.pth", states), tmp_path / "m.pth")
    merged = torch.load(tmp_path / "m.pth", weights_only=True)
    assert report.adapter["method"] == "state"
    assert list(merged) == list(load_model(tmp_path / "m.pth").state_dict())
    assert all(torch.equal(merged[k], v) for k, v in states.items())
    merge(base_path, tmp_path / "rwkv-2.pth", tmp_path / "state.pth", state_only=True)
    assert sorted(torch.load(tmp_path / "state.pth", weights_only=True)) == sorted(states)


def test_unknown_adapter_key_is_refused_by_name(tmp_path):
    base_path = make_model(tmp_path / "base.pth", 7, 2, 64, VOCAB, 32, seed=1)
    path = peft_file(tmp_path / "rwkv-1.pth", {"blocks.0.att.key.lora_M": torch.zeros(4, 64)})
    with pytest.raises(ModelFileError, match="adapter key 'blocks.0.att.key.lora_M' is neither"):
        merge(base_path, path, tmp_path / "m.pth")


# ---------------------------------------------------------------- the official runtime

def test_merged_file_loads_in_the_official_runtime(tmp_path):
    pytest.importorskip("rwkv")
    base = make_model(tmp_path / "base.pth", 7, 2, 64, VOCAB, 32, seed=1)
    adapter = trained_adapter(base, tmp_path / "a.safetensors", {"name": "bone", "r": 16})
    merge(base, adapter, tmp_path / "merged.pth")
    tokens = IDX[0].tolist()
    out = tmp_path / "oracle.pt"
    subprocess.run([sys.executable, str(ORACLE), str(tmp_path / "merged.pth"), "7", json.dumps(tokens), "5", str(out)],
                   check=True, capture_output=True, timeout=300)
    oracle = torch.load(out)["seq"]
    with torch.no_grad():
        ours = load_model(tmp_path / "merged.pth")(IDX)[0]
    assert (ours - oracle).abs().max().item() <= 1e-4


# ---------------------------------------------------------------- the command

def test_cli_merge(files, tmp_path):
    base, adapter = files
    result = runner.invoke(app, ["merge", "--base", str(base), "--adapter", str(adapter),
                                 "--out", str(tmp_path / "c.pth")])
    assert result.exit_code == 0, result.output
    text = plain(result.output)
    assert "merged lora adapter" in text and "verified" in text
    assert (tmp_path / "c.pth").exists() and (tmp_path / "merge-report.json").exists()

    result = runner.invoke(app, ["merge", "--base", str(base), "--adapter", str(adapter),
                                 "--out", str(tmp_path / "d.pth"), "--json", "--no-verify"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["verification"]["checked"] is False and data["out"]["path"].endswith("d.pth")


def test_cli_errors_are_one_line_exit_2(files, tmp_path):
    base, adapter = files
    sha = file_sha256(base)
    result = runner.invoke(app, ["merge", "--base", str(base), "--adapter", str(adapter), "--out", str(base)])
    assert result.exit_code == 2 and file_sha256(base) == sha
    assert "never overwrites" in plain(result.output) and len(plain(result.output).strip().splitlines()) == 1

    other = make_model(tmp_path / "other.pth", 7, 2, 64, VOCAB, 32, seed=5)
    result = runner.invoke(app, ["merge", "--base", str(other), "--adapter", str(adapter), "--out", str(tmp_path / "x.pth")])
    assert result.exit_code == 2 and "different base model" in plain(result.output)
    assert "Traceback" not in result.output

    bogus = tmp_path / "rwkv-9.pth"
    torch.save({"blocks.0.att.key.lora_A": torch.zeros(4, 64), "blocks.0.att.key.lora_B": torch.zeros(64, 4)}, bogus)
    result = runner.invoke(app, ["merge", "--base", str(base), "--adapter", str(bogus), "--out", str(tmp_path / "y.pth")])
    assert result.exit_code == 2 and "--lora-alpha" in plain(result.output)


def test_merge_module_is_torch_free_at_cli_import():
    code = "import sys\nimport rwkv_tune.cli.merge\nassert 'torch' not in sys.modules, 'torch imported'"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode == 0


def test_state_dict_input_is_not_modified(tmp_path):
    base = make_state_dict(7, 2, 64, VOCAB, 32, seed=1)
    snapshot = {k: v.clone() for k, v in base.items()}
    adapter = trained_adapter(save_state_dict(base, tmp_path / "b.pth"), tmp_path / "a.safetensors",
                              {"name": "lora", "r": 4, "train_parts": ["ln", "time"]})
    merge(base, adapter, tmp_path / "m.pth")
    assert all(torch.equal(base[k], v) for k, v in snapshot.items())


# ---------------------------------------------------------------- streaming, verification

def test_streamed_safetensors_and_base_file_untouched_even_with_shared_mmaps(files, tmp_path):
    import mmap

    base, adapter = files
    sha = file_sha256(base)
    merge(base, adapter, tmp_path / "a.pth", verify=False)
    with torch.serialization.set_default_mmap_options(mmap.MAP_SHARED):  # writing in place would hit the file
        merge(base, adapter, tmp_path / "b.safetensors", verify=False)
    assert file_sha256(base) == sha
    a, b = torch.load(tmp_path / "a.pth", weights_only=True), load_state_dict(tmp_path / "b.safetensors")
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    st_base = save_state_dict(load_state_dict(base), tmp_path / "base.safetensors")  # a safetensors base too
    st_sha = file_sha256(st_base)
    merge(st_base, adapter, tmp_path / "c.pth", verify=False)
    c = torch.load(tmp_path / "c.pth", weights_only=True)
    assert file_sha256(st_base) == st_sha and list(c) == list(a) and all(torch.equal(a[k], c[k]) for k in a)


def test_bf16_merge_allows_exactly_the_rounding_of_storing_bf16(tmp_path):
    base = make_model(tmp_path / "base.pth", 7, 2, 64, VOCAB, 32, seed=1, dtype=torch.bfloat16)
    adapter = trained_adapter(base, tmp_path / "a.safetensors", {"name": "lora", "r": 8, "alpha": 16})
    v = merge(base, adapter, tmp_path / "m.pth").verification
    assert v["checked"] and v["dtype"] == "bfloat16" and v["dtype_rounding"] > 0 and v["fp32_merge_diff"] < 1e-4
    assert v["max_abs_diff"] <= v["tolerance"] <= v["dtype_rounding"] + 1e-3 * 100
    assert merge(base, adapter, tmp_path / "f.pth", dtype="fp32").verification["dtype_rounding"] == 0


def test_a_wrong_merge_fails_verification_and_writes_nothing(files, tmp_path, monkeypatch):
    from rwkv_tune.peft.lora import LoRA

    base, adapter = files
    right = LoRA.merge_weight
    monkeypatch.setattr(LoRA, "merge_weight", lambda self, w, parts, cfg, q: right(self, w, parts, cfg, q) * 1.01)
    with pytest.raises(MergeError, match="merged model's logits differ from base \\+ adapter"):
        merge(base, adapter, tmp_path / "m.pth")
    assert not (tmp_path / "m.pth").exists() and not (tmp_path / "merge-report.json").exists()
    assert not list(tmp_path.glob(".m.pth.*"))
