"""`rwkv-tune export --format gguf`: the file llama.cpp runs, checked by `gguf.GGUFReader` and by llama.cpp itself.

Tiny World-vocab models (V = 65536, C = 64, one 64-wide head, two layers) trained for two LoRA steps:
v7 through the trainer with `output.export: gguf` (merged + exported at the end of the run), v6 exported
from its run directory by the CLI (merged on the way). llama.cpp's logits, greedy continuation and
tokenization must equal ours; its checks skip where `llama_cpp` is not installed.
"""

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from rwkv_tune import load_model
from rwkv_tune.checkpoint import load_state_dict, save_state_dict
from rwkv_tune.cli import app
from rwkv_tune.data import write_binidx
from rwkv_tune.data.tokenizer import get_tokenizer
from rwkv_tune.export import export_gguf
from rwkv_tune.export.gguf_vocab import escape_token
from rwkv_tune.merge import merge
from rwkv_tune.testing import make_model, make_state_dict

gguf = pytest.importorskip("gguf")

pytestmark = pytest.mark.slow
VOCAB = 65536
DIMS = {"n_layer": 2, "n_embd": 64, "head_size": 64, "vocab_size": VOCAB}
PROMPT = "The quick brown fox jumps over"
MIXED = "Hello, world! 你好，世界。RWKV 很快 🚀🌍 emoji 😀 and tabs\tand\n\nnew lines 'quotes' \\ back"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
runner = CliRunner()


def cli(*args) -> tuple[int, str]:
    result = runner.invoke(app, ["export", *map(str, args)])
    return result.exit_code, ANSI.sub("", result.output)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _train(root: Path, version: int, output: dict) -> Path:
    """A two-step LoRA run on a tiny World-vocab model, via the worker (so the end-of-run code runs too)."""
    from rwkv_tune.train.worker import main

    make_model(root / f"base-v{version}.pth", version=version, seed=version, **DIMS)
    rng = np.random.default_rng(0)
    docs = [[(int(s) + i) % 190 + 5 for i in range(40)] + [0] for s in rng.integers(1, 190, 16)]
    write_binidx(root / "corpus", docs)
    raw = {"model": {"path": str(root / f"base-v{version}.pth")}, "method": {"name": "lora", "r": 8, "alpha": 16},
           "data": {"path": str(root / "corpus"), "ctx_len": 32, "dataload": "pad"},
           "train": {"micro_bsz": 2, "epoch_steps": 2, "epoch_count": 1, "lr_init": 2e-2, "lr_final": 1e-2,
                     "precision": "fp32", "grad_cp": False, "device": "cpu", "seed": 1},
           "output": {"dir": str(root / f"run-v{version}"), **output}}
    preset = root / f"preset-v{version}.yaml"
    preset.write_text(yaml.safe_dump(raw))
    assert main([str(preset), "--quiet"]) == 0
    return root / f"run-v{version}"


@pytest.fixture(scope="module")
def v7(tmp_path_factory) -> dict[str, Path]:
    """v7: `output.export: gguf` in the preset → run/merged.pth and run/merged.gguf (f32) at the end of training."""
    root = tmp_path_factory.mktemp("v7")
    run = _train(root, 7, {"merge": True, "merge_dtype": "fp32", "export": "gguf"})
    return {"run": run, "merged": run / "merged.pth", "gguf": run / "merged.gguf", "base": root / "base-v7.pth"}


@pytest.fixture(scope="module")
def v6(tmp_path_factory) -> dict[str, Path]:
    """v6: `rwkv-tune export RUN_DIR --dtype f32` merges on the way; our reference merges with the library."""
    root = tmp_path_factory.mktemp("v6")
    run = _train(root, 6, {})
    code, text = cli(run, "--dtype", "f32", "--out", root / "v6.gguf")
    assert code == 0, text
    assert f"run {run}: merging adapter.safetensors (lora)" in text
    assert "rwkv6, f32" in text and "merged lora adapter" in text and "llama-cli -m" in text
    merge(root / "base-v6.pth", run / "adapter.safetensors", root / "merged.pth")
    return {"run": run, "merged": root / "merged.pth", "gguf": root / "v6.gguf"}


@pytest.fixture(scope="module")
def v7_reader(v7):
    return gguf.GGUFReader(v7["gguf"])  # slow-ish (it parses the 65536-token list): read once


def field(reader, key):
    f = reader.get_field(key)
    return None if f is None else f.contents()


# --- the file, read back with gguf's own reader (no llama.cpp needed) ----------------------------------------

def test_v7_file_layout_metadata_and_tokenizer(v7, v7_reader):
    reader = v7_reader
    assert field(reader, "general.architecture") == "rwkv7"
    assert field(reader, "rwkv7.block_count") == 2 and field(reader, "rwkv7.embedding_length") == 64
    assert field(reader, "rwkv7.wkv.head_size") == 64 and field(reader, "rwkv7.feed_forward_length") == 256
    assert field(reader, "rwkv7.attention.decay_lora_rank") == 32 and field(reader, "rwkv7.attention.gate_lora_rank") == 32
    assert field(reader, "general.file_type") == 0  # ALL_F32
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 3 + 2 * 28 + 3 and all(t.tensor_type.name == "F32" for t in tensors.values())
    assert list(tensors["token_embd.weight"].shape) == [64, VOCAB]  # ggml order: [n_embd, n_vocab]
    assert list(tensors["blk.1.time_mix_lerp_fused.weight"].shape) == [64, 1, 1, 6]
    assert list(tensors["blk.1.time_mix_w1.weight"].shape) == [64, 32]  # official [C, Dw], transposed
    sd = load_state_dict(v7["merged"])
    np.testing.assert_array_equal(tensors["blk.1.time_mix_w1.weight"].data, sd["blocks.1.att.w1"].T.numpy())
    np.testing.assert_array_equal(tensors["blk.1.time_mix_lerp_fused.weight"].data[2, 0, 0], sd["blocks.1.att.x_k"][0, 0])
    np.testing.assert_array_equal(tensors["blk.0.time_mix_v1.weight"].data, sd["blocks.0.att.a1"].T.numpy())
    np.testing.assert_array_equal(tensors["blk.0.time_mix_r_k.weight"].data, sd["blocks.0.att.r_k"].flatten().numpy())
    assert field(reader, "tokenizer.ggml.model") == "rwkv"
    tokens = field(reader, "tokenizer.ggml.tokens")
    tok = get_tokenizer()
    assert len(tokens) == VOCAB and tokens[0] == "<s>" and tokens[-1] == f"[PAD{VOCAB - 1}]"
    for i in (1, 11, 12, 33, 40, 93, 261, 257, 33155, 65529):  # bytes, "\n", '\'', ' ', '"'... "\n\n", long ones
        assert tokens[i] == escape_token(tok.token_bytes(i)).decode(), i
    assert all(llama_unescape(tokens[i]) == tok.token_bytes(i) for i in range(1, 65530))  # every token round-trips
    assert field(reader, "tokenizer.ggml.eot_token_id") == 261
    assert os.stat(v7["gguf"]).st_mode & 0o777 == 0o666 & ~_umask()
    assert not [p for p in v7["run"].iterdir() if p.name.startswith(".") and p.name != ".lock"]  # no temp files left


def llama_unescape(text: str) -> bytes:
    """llama.cpp's `llama_unescape_rwkv_token` rules: \\t \\n \\r, \\xHH, and \\c for any other c."""
    out, i = bytearray(), 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            nxt = text[i + 1]
            if nxt == "x":
                out.append(int(text[i + 2:i + 4], 16))
                i += 4
                continue
            out += {"t": b"\t", "n": b"\n", "r": b"\r"}.get(nxt, nxt.encode())
            i += 2
            continue
        out += c.encode()
        i += 1
    return bytes(out)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_v6_file_layout(v6):
    reader = gguf.GGUFReader(v6["gguf"])
    assert field(reader, "general.architecture") == "rwkv6"
    assert field(reader, "rwkv6.time_mix_extra_dim") == 32 and field(reader, "rwkv6.time_decay_extra_dim") == 64
    assert field(reader, "rwkv6.rescale_every_n_layers") == 0
    tensors = {t.name: t for t in reader.tensors}
    assert list(tensors["blk.0.time_mix_w2.weight"].shape) == [32, 64, 5]  # [5, Dm, C] → ggml {Dm, C, 5}
    assert list(tensors["blk.0.time_mix_lerp_fused.weight"].shape) == [64, 1, 1, 5]
    assert list(tensors["blk.0.time_mix_first.weight"].shape) == [64, 1]
    sd = load_state_dict(v6["merged"])
    np.testing.assert_array_equal(tensors["blk.0.time_mix_w2.weight"].data,
                                  sd["blocks.0.att.time_maa_w2"].permute(0, 2, 1).numpy())


def test_q8_0_and_bf16_types_where_llama_cpp_quantizes(v7, tmp_path):
    """Linear/embedding/ICLR-gate-value low-rank weights take the dtype; 1-D, norms, lerps, w1/w2 stay f32."""
    report = export_gguf(v7["merged"], tmp_path / "m.gguf", dtype="q8_0")
    assert report.tensor_types == {"Q8_0": 2 + 2 * 12, "F32": 36}
    assert report.bytes < 0.35 * os.path.getsize(v7["gguf"])
    report = export_gguf(v7["merged"], tmp_path / "b.gguf", dtype="bf16")
    assert report.tensor_types == {"BF16": 26, "F32": 36} and report.bytes < 0.6 * os.path.getsize(v7["gguf"])


# --- unsupported inputs: one line, exit 2 ---------------------------------------------------------------------

def _one_line_error(code: int, text: str, *needles: str) -> None:
    assert code == 2, text
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in text, text
    for needle in needles:
        assert needle in lines[0], text


def test_refuses_v5_an_adapter_a_missing_file_and_bad_options(v7, tmp_path):
    v5 = make_model(tmp_path / "v5.pth", version=5, n_layer=2, n_embd=64, vocab_size=300)
    _one_line_error(*cli(v5, "--out", tmp_path / "v5.gguf"), "RWKV-5", "llama.cpp has no RWKV-5 architecture")
    _one_line_error(*cli(v7["run"] / "adapter.safetensors", "--out", tmp_path / "a.gguf"), "is an adapter, not a model",
                    "rwkv-tune export RUN_DIR")
    _one_line_error(*cli(tmp_path / "nope.pth", "--out", tmp_path / "n.gguf"), "nope.pth does not exist")
    _one_line_error(*cli(v7["merged"], "--dtype", "q4_0"), "--dtype q4_0 is not one of f32, f16, bf16, q8_0")
    _one_line_error(*cli(v7["merged"], "--format", "onnx"), "--format onnx")
    _one_line_error(*cli(v7["merged"], "--out", tmp_path / "m.bin"), "must end in .gguf")
    small = make_model(tmp_path / "small.pth", version=7, n_layer=1, n_embd=64, vocab_size=1000)
    _one_line_error(*cli(small, "--out", tmp_path / "s.gguf"), "1000 vocab rows")
    sd = make_state_dict(7, n_layer=1, n_embd=64, vocab_size=VOCAB, time_state=True)
    save_state_dict(sd, tmp_path / "state.pth")
    _one_line_error(*cli(tmp_path / "state.pth", "--out", tmp_path / "st.gguf"), "time_state")
    for variant in ("7a", "7b"):
        save_state_dict(make_state_dict(7, n_layer=1, n_embd=64, vocab_size=VOCAB, variant=variant),
                        tmp_path / f"{variant}.pth")
        _one_line_error(*cli(tmp_path / f"{variant}.pth", "--out", tmp_path / f"{variant}.gguf"), "DeepEmbed",
                        "no architecture for the DeepEmbed tables")
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*"))


# --- llama.cpp itself ------------------------------------------------------------------------------------------

def _llama(path: Path):
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(path), logits_all=True, vocab_only=False, n_ctx=128, n_batch=128,
                           n_threads=1, verbose=False)


def _ours_greedy(model, ids: list[int], n: int) -> list[int]:
    ids = list(ids)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[-n:]


def _llama_greedy(llm, n: int) -> list[int]:
    """n greedy tokens from llama.cpp, continuing from what it has evaluated."""
    out = []
    for _ in range(n):
        out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval([out[-1]])
    return out


@pytest.mark.parametrize("version", [7, 6])
def test_llama_cpp_matches_our_logits_greedy_and_tokenizer(version, v7, v6):
    paths = v7 if version == 7 else v6
    llm = _llama(paths["gguf"])
    ours = load_model(paths["merged"]).eval()
    tok = get_tokenizer()
    assert llm.tokenize(MIXED.encode(), add_bos=False, special=False) == tok.encode(MIXED)
    ids = tok.encode(PROMPT)
    llm.eval(ids)
    theirs = np.asarray(llm.scores[:len(ids)])
    with torch.no_grad():
        mine = ours(torch.tensor([ids]))[0].numpy()
    assert np.abs(theirs - mine).max() < 1e-3, np.abs(theirs - mine).max()
    assert _llama_greedy(llm, 16) == _ours_greedy(ours, ids, 16)
    llm.close()


def _pattern_model(path: Path) -> Path:
    """A v7 model whose next token is clearly (current token + 1): head rows = scaled ln0(emb) of the previous id,
    the blocks random but smaller, so the pattern survives q8_0 and still runs through every block."""
    sd = make_state_dict(7, seed=3, **DIMS)
    for key in ("blocks.0.ln0.weight", "ln_out.weight"):
        sd[key] = torch.ones(64)
    for key in ("blocks.0.ln0.bias", "ln_out.bias"):
        sd[key] = torch.zeros(64)
    for i in range(2):
        sd[f"blocks.{i}.att.output.weight"] *= 0.3
        sd[f"blocks.{i}.ffn.value.weight"] *= 0.3
    normed = torch.nn.functional.layer_norm(sd["emb.weight"], (64,))
    sd["head.weight"] = torch.roll(normed, 1, dims=0) * 0.5
    save_state_dict(sd, path)
    return path


def test_q8_0_greedy_matches_ours_on_a_clear_pattern(tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp")  # noqa: F841
    model = _pattern_model(tmp_path / "pattern.pth")
    report = export_gguf(model, tmp_path / "pattern-q8.gguf", dtype="q8_0")
    assert report.dtype == "q8_0" and report.tensor_types["Q8_0"] == 26
    ids = get_tokenizer().encode(PROMPT)
    ours = _ours_greedy(load_model(model).eval(), ids, 8)
    assert ours == [ids[-1] + k for k in range(1, 9)]  # the pattern is really there
    llm = _llama(tmp_path / "pattern-q8.gguf")
    llm.eval(ids)
    assert _llama_greedy(llm, 8) == ours
    llm.close()
