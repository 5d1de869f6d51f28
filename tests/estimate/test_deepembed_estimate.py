"""The estimator counts RWKV-7a/7b per-token tables (V × 1024 per layer; 7b also V × (256 + C)) and their costs."""

import pytest

from rwkv_tune.estimate import Config, estimate
from rwkv_tune.estimate.vram import count_params, vram
from rwkv_tune.spec import detect_from_shapes, expected_shapes

L, C, V, F = 4, 256, 4096, 1024
DIMS = {"w": 32, "a": 32, "v": 32, "g": 64}


def spec_of(variant: str):
    return detect_from_shapes(expected_shapes(7, L, C, 64, V, F, DIMS, variant=variant))


def test_tables_are_counted_by_variant():
    plain, a, b = (count_params(spec_of(v), Config()) for v in ("", "7a", "7b"))
    assert plain.deepembed_tables == 0
    assert a.deepembed_tables == L * V * 1024
    assert b.deepembed_tables == L * V * (1024 + 256 + C)
    # booked with emb/head (looked up, never quantised), not as Linears or matmul weights
    assert a.frozen_emb_head - plain.frozen_emb_head == L * V * 1024
    assert b.frozen_emb_head - plain.frozen_emb_head == L * V * (1024 + 256 + C)
    assert a.matmul_params - plain.matmul_params == L * (1024 * C + C * 32 + 32 * F)
    assert b.total == spec_of("7b").params


def test_default_lora_targets_match_peft_and_opt_in_targets_add():
    from rwkv_tune import peft

    spec = spec_of("7b")
    for targets in (None, ("att.key", "ffn.s_emb_x", "qkv.qq", "qkv.k_emb_x", "qkv.v_emb_x")):
        ours = count_params(spec, Config(method="lora", rank=8, targets=targets, train_parts=()))
        cfg = {"name": "lora", "r": 8, "train_parts": [], **({"targets": list(targets)} if targets else {})}
        assert ours.adapter == peft.count_trainable(spec, cfg)["adapter"]


def test_deepembed_train_part_trains_the_tables():
    p = count_params(spec_of("7b"), Config(method="lora", rank=8, train_parts=("deepembed",)))
    assert p.dense_trainable == L * V * (1024 + 256 + C)


@pytest.mark.parametrize("train_type", ["normal", "infctx"])
def test_variants_cost_more_memory(train_type):
    cfg = Config(ctx_len=2048, micro_bsz=2, grad_cp=False, train_type=train_type, chunk_ctx=512)
    gib = [vram(spec_of(v), cfg).total_gib for v in ("", "7a", "7b")]
    assert gib[0] < gib[1] < gib[2]


def test_estimate_from_a_7b_spec_runs():
    result = estimate(spec_of("7b"), method="lora", rank=8, ctx_len=512)
    assert result.to_dict()["model"]["variant"] == "7b"


def test_estimate_accepts_the_deepembed_part():
    result = estimate(spec_of("7a"), method="lora", rank=8, ctx_len=512, train_parts=("ln", "deepembed"))
    assert result.vram.params.dense_trainable >= L * V * 1024


def test_cli_estimate_names_the_variant_and_counts_its_tables(tiny_model):
    import json
    import re

    from typer.testing import CliRunner

    from rwkv_tune.cli import app

    path = tiny_model(7, n_layer=2, n_embd=64, head_size=32, vocab_size=300, variant="7b")
    result = CliRunner().invoke(app, ["estimate", "--model", str(path), "--ctx-len", "256"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "RWKV-7b DeepEmbed Attention" in re.sub(r"\x1b\[[0-9;]*m", "", result.output)
    info = json.loads(CliRunner().invoke(app, ["estimate", "--model", str(path), "--ctx-len", "256", "--json"]).stdout)
    assert info["model"]["params"] == sum(t.numel() for t in __import__("torch").load(path).values())
