"""Hugging Face `peft` adapter folders, checked against the real `peft` library on a module tree with the
official RWKV-7 names: its folders merge with `rwkv-tune merge` to what `merge_and_unload()` gives, our
`peft` export loads in `PeftModel.from_pretrained` and merges to our merged weights, and files that are
not adapters are refused in one line."""

import json
import re
import warnings

import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from rwkv_tune import load_model
from rwkv_tune import peft as our_peft
from rwkv_tune.checkpoint import load_state_dict
from rwkv_tune.cli import app
from rwkv_tune.merge import merge
from rwkv_tune.peft.hf_export import write_hf_adapter
from rwkv_tune.peft.hf_format import read_hf_adapter
from rwkv_tune.testing import make_model


def import_hf_peft():
    """`peft` (via transformers) imports the pip package `kernels`; this repository's top-level kernels/ folder
    (CUDA sources) shadows it when the repo root is on sys.path, so import the real one first."""
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    ours = sys.modules.get("kernels")
    if ours is not None and Path(getattr(ours, "__file__", None) or root).resolve().parent == root / "kernels":
        del sys.modules["kernels"]
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != root]
    try:
        import kernels  # noqa: F401
    except ImportError:
        pass
    finally:
        sys.path[:] = saved
    return pytest.importorskip("peft", exc_type=ImportError)


hf = import_hf_peft()
VOCAB = 200
LINEAR = re.compile(r"^(blocks\.\d+\.(att|ffn)\.(receptance|key|value|output|gate))\.weight$")
TARGETS = ["receptance", "key", "value", "output"]  # suffix match: att.* and ffn.key/value
runner = CliRunner()


def module_tree(sd: dict) -> nn.Module:
    """A plain torch module tree whose Linear modules carry the official names (blocks.0.att.key …)."""
    root = nn.Module()
    for key, w in sd.items():
        m = LINEAR.match(key)
        if not m:
            continue
        *path, leaf = m.group(1).split(".")
        parent = root
        for name in path:
            if not hasattr(parent, name):
                parent.add_module(name, nn.Module())
            parent = getattr(parent, name)
        linear = nn.Linear(w.shape[1], w.shape[0], bias=False)
        linear.weight.data = w.float().clone()
        parent.add_module(leaf, linear)
    return root


@pytest.fixture
def base(tmp_path):
    return make_model(tmp_path / "base.pth", 7, 2, 64, VOCAB, 32, seed=1)


def hf_folder(base, tmp_path, config, prune: bool = False):
    """Wrap the tree with peft, randomise every adapter tensor, save_pretrained; return (folder, peft's merge)."""
    sd = load_state_dict(base)
    model = hf.get_peft_model(module_tree(sd), config)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    if prune:  # AdaLoRA after rank allocation: some modules keep fewer ranks (saved pruned, ranknum stays init_r)
        model.peft_config["default"].rank_pattern = {
            "blocks.0.att.key.lora_E.default": [True, False, True, True, False, True, True, True],
            "blocks.1.ffn.value.lora_E.default": [False, True, False, True, False, False, True, False]}
    folder = tmp_path / "hf-adapter"
    model.save_pretrained(folder)
    # peft's own reading of the folder is the reference
    with warnings.catch_warnings():  # peft's LoRA-style rank_pattern lookup warns; AdaLoRA resizes by it anyway
        warnings.filterwarnings("ignore", "The following rank_pattern keys")
        loaded = hf.PeftModel.from_pretrained(module_tree(sd), folder)
    merged = {k: v.detach() for k, v in loaded.merge_and_unload().state_dict().items()}
    return folder, merged


CONFIGS = {
    "lora": lambda: hf.LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS),
    "rslora": lambda: hf.LoraConfig(r=8, lora_alpha=12.5, use_rslora=True, target_modules=TARGETS),
    "lora-patterns": lambda: hf.LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS,
                                           rank_pattern={"ffn.key": 4}, alpha_pattern={"att.value": 3}),
    "dora": lambda: hf.LoraConfig(r=8, lora_alpha=16, use_dora=True, target_modules=TARGETS),
    "dora-rslora-patterns": lambda: hf.LoraConfig(r=8, lora_alpha=12.5, use_dora=True, use_rslora=True,
                                                  target_modules=TARGETS, rank_pattern={"att.key": 2}),
    "miss-bone": lambda: hf.MissConfig(r=8, target_modules=TARGETS),
    "miss-bat": lambda: hf.MissConfig(r=8, init_weights="bat", target_modules=TARGETS),
    "miss-mini": lambda: hf.MissConfig(r=8, init_weights="mini", mini_r=4, target_modules=TARGETS),
    "adalora": lambda: hf.AdaLoraConfig(init_r=8, target_r=4, lora_alpha=24, total_step=10, target_modules=TARGETS),
}


def assert_merged_like(ours: dict, theirs: dict, base_sd: dict) -> None:
    linears = [k for k in ours if LINEAR.match(k)]
    assert sorted(linears) == sorted(theirs)
    changed = 0
    for key in linears:
        assert (ours[key].float() - theirs[key]).abs().max() <= 1e-5, key
        changed += not torch.equal(ours[key].float(), base_sd[key].float())
    assert changed == len(linears)  # the test cannot pass with an adapter that does nothing
    for key in ours:
        if key not in theirs:
            assert torch.equal(ours[key], base_sd[key]), key


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_peft_folder_merges_like_merge_and_unload(kind, base, tmp_path):
    folder, theirs = hf_folder(base, tmp_path, CONFIGS[kind]())
    out = tmp_path / "merged.pth"
    result = runner.invoke(app, ["merge", "--base", str(base), "--adapter", str(folder), "--out", str(out),
                                 "--dtype", "fp32"])
    assert result.exit_code == 0, result.output
    assert_merged_like(torch.load(out), theirs, load_state_dict(base))
    report = json.loads((tmp_path / "merge-report.json").read_text())
    assert report["adapter"]["format"] == "hf-peft" and report["verification"]["checked"]
    # read and written back by us, peft merges it to the same weights (AdaLoRA and patterns as one plain LoRA)
    again = write_hf_adapter(read_hf_adapter(folder), tmp_path / "rewritten")
    loaded = hf.PeftModel.from_pretrained(module_tree(load_state_dict(base)), again)
    for key, value in loaded.merge_and_unload().state_dict().items():
        assert (value - theirs[key]).abs().max() <= 1e-5, key


def test_adalora_with_pruned_ranks_merges_like_peft(base, tmp_path):
    folder, theirs = hf_folder(base, tmp_path, CONFIGS["adalora"](), prune=True)
    adapter = read_hf_adapter(folder / "adapter_model.safetensors")
    assert adapter.config.r == 8 and adapter.config.scale == 1.0  # scale folded into B, ranks zero-padded
    merge(base, folder, tmp_path / "merged.pth", dtype="fp32", verify=False)
    assert_merged_like(torch.load(tmp_path / "merged.pth"), theirs, load_state_dict(base))


def test_uniform_lora_keeps_its_recorded_r_and_alpha(base, tmp_path):
    folder, _ = hf_folder(base, tmp_path, CONFIGS["rslora"]())
    cfg = read_hf_adapter(folder).config
    assert (cfg.name, cfg.r, cfg.alpha, cfg.rslora) == ("lora", 8, 12.5, True)
    assert cfg.targets == ("att.key", "att.output", "att.receptance", "att.value", "ffn.key", "ffn.value")


OURS = {
    "lora": {"name": "lora", "r": 8, "alpha": 16},
    "rslora": {"name": "lora", "r": 8, "alpha": 12.5, "rslora": True},
    "pissa": {"name": "pissa", "r": 4},
    "bone": {"name": "miss", "r": 8},
    "bat": {"name": "bat", "r": 8},
    "mini": {"name": "miss", "mode": "mini", "r": 8, "mini_r": 4},
}


def our_adapter(base, path, cfg):
    model = load_model({k: v.clone() for k, v in load_state_dict(base).items()})
    params = our_peft.apply(model, {**cfg, "train_parts": [], "targets": ["att.key", "att.value", "ffn.value"]})
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return our_peft.save_adapter(model, path)


@pytest.mark.parametrize("kind", sorted(OURS))
def test_our_peft_export_loads_and_merges_in_peft(kind, base, tmp_path):
    adapter_path = our_adapter(base, tmp_path / "adapter.safetensors", OURS[kind])
    merge(base, adapter_path, tmp_path / "ours.pth", dtype="fp32", verify=False)
    folder = write_hf_adapter(our_peft.read_adapter(adapter_path), tmp_path / "export")
    sd = load_state_dict(base)
    loaded = hf.PeftModel.from_pretrained(module_tree(sd), folder)
    theirs = {k: v.detach() for k, v in loaded.merge_and_unload().state_dict().items()}
    ours = torch.load(tmp_path / "ours.pth")
    adapted = {k for k in ours if LINEAR.match(k) and not torch.equal(ours[k], sd[k])}
    assert len(adapted) == 6  # 3 targets × 2 layers
    for key in theirs:
        assert (ours[key] - theirs[key]).abs().max() <= 1e-5, key
    # and it reads back as the same adapter, base fingerprint included
    back = read_hf_adapter(folder)
    assert back.base_fingerprint == our_peft.read_adapter(adapter_path).base_fingerprint
    merge(base, folder, tmp_path / "again.pth", dtype="fp32", verify=False)
    again = torch.load(tmp_path / "again.pth")
    assert all((again[k] - ours[k]).abs().max() <= 1e-5 for k in ours)


def one_line_refusal(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert "Traceback" not in text and text.count("\n") == 0, text
    return text


def test_adalora_with_lora_alpha_is_one_line_exit_2(base, tmp_path):
    folder, _ = hf_folder(base, tmp_path, CONFIGS["adalora"]())
    for adapter in (folder, folder / "adapter_model.safetensors"):
        text = one_line_refusal(["merge", "--base", str(base), "--adapter", str(adapter), "--out",
                                 str(tmp_path / "m.pth"), "--lora-alpha", "16"])
        assert "ADALORA" in text and "--lora-alpha" in text


def test_prefix_tuning_folder_is_refused_in_one_line(base, tmp_path):
    folder = tmp_path / "prefix"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 20}))
    from safetensors.torch import save_file

    save_file({"prompt_embeddings": torch.zeros(20, 64)}, str(folder / "adapter_model.safetensors"))
    for adapter in (folder, folder / "adapter_model.safetensors"):
        text = one_line_refusal(["merge", "--base", str(base), "--adapter", str(adapter), "--out",
                                 str(tmp_path / "m.pth")])
        assert "PREFIX_TUNING" in text


def test_random_safetensors_is_refused_saying_what_it_is(base, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "random.safetensors"
    save_file({"encoder.layer.0.weight": torch.zeros(4, 4), "classifier.bias": torch.zeros(4)}, str(path))
    text = one_line_refusal(["merge", "--base", str(base), "--adapter", str(path), "--out", str(tmp_path / "m.pth")])
    assert "not an adapter" in text and "2 tensors" in text
    hf_named = tmp_path / "loose.safetensors"
    save_file({"base_model.model.blocks.0.att.key.lora_A.weight": torch.zeros(4, 64)}, str(hf_named))
    text = one_line_refusal(["merge", "--base", str(base), "--adapter", str(hf_named), "--out",
                             str(tmp_path / "m.pth")])
    assert "adapter_config.json" in text


def inspect_json(path):
    result = runner.invoke(app, ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_inspect_says_what_any_adapter_is(base, tmp_path):
    folder, _ = hf_folder(base, tmp_path, CONFIGS["rslora"]())
    for path in (folder, folder / "adapter_model.safetensors"):
        info = inspect_json(path)
        assert info["tool"].startswith("Hugging Face peft") and info["peft_type"] == "LORA"
        assert (info["method"], info["r"], info["alpha"], info["rslora"]) == ("lora", 8, 12.5, True)
        assert "att.key" in info["targets"] and info["base_fingerprint"] is None
    ours = our_adapter(base, tmp_path / "adapter.safetensors", OURS["bone"])
    info = inspect_json(ours)
    assert info["tool"].startswith("rwkv-tune") and (info["method"], info["mode"], info["r"]) == ("miss", "bone", 8)
    assert info["base_fingerprint"] == our_peft.read_adapter(ours).base_fingerprint
    exported = write_hf_adapter(our_peft.read_adapter(ours), tmp_path / "export")
    assert inspect_json(exported)["base_fingerprint"] == info["base_fingerprint"]
    from rwkv_tune.train.export import export_rwkv_peft

    lora = our_adapter(base, tmp_path / "lora.safetensors", OURS["lora"])
    rwkv_peft = export_rwkv_peft(lora, tmp_path / "rwkv-peft", 0, base=str(base))
    info = inspect_json(rwkv_peft)
    assert info["format"] == "rwkv-peft" and info["r"] == 8 and "not recorded" in info["alpha"]
    table = runner.invoke(app, ["inspect", str(folder)], terminal_width=200)
    assert table.exit_code == 0 and "Hugging Face peft" in table.output and "12.5" in table.output
    assert inspect_json(base)["n_layer"] == 2  # a model is still a model


def test_inspect_an_adalora_folder_shows_its_recorded_numbers(base, tmp_path):
    folder, _ = hf_folder(base, tmp_path, CONFIGS["adalora"](), prune=True)
    info = inspect_json(folder)
    assert (info["peft_type"], info["method"], info["r"], info["target_r"]) == ("ADALORA", "adalora", 8, 4)
    assert info["alpha"] == 24 and info["scale"] == 3.0 and "rslora" not in info


def test_inspect_names_an_unreadable_peft_type(tmp_path):
    folder = tmp_path / "prefix"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING", "peft_version": "0.21.2"}))
    info = inspect_json(folder)
    assert info["peft_type"] == "PREFIX_TUNING" and info["readable"] is False


def test_generate_applies_a_peft_folder_to_its_base(base, tmp_path):
    from rwkv_tune.generate import load_for_generation

    folder, _ = hf_folder(base, tmp_path, CONFIGS["miss-bat"]())
    merge(base, folder, tmp_path / "merged.pth", dtype="fp32", verify=False)
    idx = torch.randint(0, VOCAB, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        on_the_fly = load_for_generation(folder, base=base)(idx)
        merged = load_model(tmp_path / "merged.pth").eval()(idx)
        plain = load_model(base).eval()(idx)
    assert (on_the_fly - merged).abs().max() <= 1e-4 < (on_the_fly - plain).abs().max()
    # our export records the base path, so --base is not needed; peft's own folder here records none
    exported = write_hf_adapter(read_hf_adapter(folder), tmp_path / "export", base_name=str(base))
    with torch.no_grad():
        assert (load_for_generation(exported)(idx) - merged).abs().max() <= 1e-4
    text = one_line_refusal(["generate", str(folder), "--prompt", "hi"])
    assert "--base" in text


def test_a_peft_folder_is_a_training_starting_point(base, tmp_path):
    """The library path a `method.load` key would take: the folder's adapter on a fresh base, trainable."""
    from rwkv_tune.peft.rwkv_peft import load_any_adapter

    folder, _ = hf_folder(base, tmp_path, CONFIGS["lora"]())
    merge(base, folder, tmp_path / "merged.pth", dtype="fp32", verify=False)
    model = load_model(base)
    params = our_peft.load_adapter(model, load_any_adapter(folder))
    idx = torch.randint(0, VOCAB, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (model(idx) - load_model(tmp_path / "merged.pth")(idx)).abs().max() <= 1e-4
    lora = [p for n, p in model.named_parameters() if n.endswith((".lora_A", ".lora_B"))]
    assert len(lora) == 24 and all(p.requires_grad for p in lora) and {id(p) for p in lora} <= {id(p) for p in params}
