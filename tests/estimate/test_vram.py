"""The analytic VRAM model: parameter counts, monotonicity, what each knob saves, sharding."""

from __future__ import annotations

import pytest

from rwkv_tune.errors import ConfigError
from rwkv_tune.estimate import estimate, released_spec
from rwkv_tune.estimate.config import Config
from rwkv_tune.estimate.released import RELEASED
from rwkv_tune.estimate.vram import COMPONENTS, count_params, vram

# Exact totals from rwkv-architecture.md §6 (v7 without the unused layer-0 v0/v1/v2).
EXACT = {(7, "0.1B"): 191_034_624, (7, "0.4B"): 450_767_872, (7, "1.5B"): 1_527_404_544,
         (7, "2.9B"): 2_947_735_040, (7, "7.2B"): 7_199_141_888, (7, "13.3B"): 13_269_245_952,
         (6, "1.6B"): 1_599_873_024, (6, "3B"): 3_099_863_040, (6, "7B"): 7_635_746_816, (6, "14B"): 14_069_088_256,
         (5, "0.4B"): 461_721_600, (5, "1.5B"): 1_577_754_624, (5, "3B"): 3_062_999_040, (5, "7B"): 7_518_044_160}


def total(**kw) -> float:
    kw.setdefault("size", "1.5B")
    return estimate(**kw).total_gib


@pytest.mark.parametrize(("version", "size"), list(EXACT))
def test_released_shapes_have_the_published_parameter_counts(version, size):
    assert released_spec(size, version).params == EXACT[(version, size)]


def test_size_aliases_and_unknown_sizes():
    assert released_spec("7B", 7).n_embd == 4096 and released_spec("7B", 7).n_layer == 32
    assert released_spec("14B", 7).n_layer == 61
    assert released_spec("3b", 7) == released_spec("2.9B", 7)
    with pytest.raises(ConfigError, match="Valid sizes: 0.1B, 0.4B"):
        released_spec("9B", 7)


def test_trainable_counts_match_published_figures():
    # RWKV-PEFT PR #81: v7 13.3B LoRA r=32 on att r/k/v/o + ffn k/v trains 143,917,056 parameters.
    assert count_params(released_spec("13.3B"), Config(rank=32, train_parts=())).trainable == 143_917_056
    # rwkv-peft.md §3.4: on v7 1.5B, Bone r=64 and LoRA r=32 both train 1,179,648 per layer.
    spec = released_spec("1.5B")
    bone = count_params(spec, Config(method="miss", rank=64, train_parts=())).trainable
    lora = count_params(spec, Config(method="lora", rank=32, train_parts=())).trainable
    assert bone == lora == 24 * 1_179_648
    state = count_params(spec, Config(method="state")).trainable
    assert state == 24 * 32 * 64 * 64


@pytest.mark.parametrize("method", ["lora", "miss", "bat", "state", "full"])
@pytest.mark.parametrize("version", [5, 6, 7])
def test_breakdown_sums_to_total(method, version):
    size = {5: "0.4B", 6: "1.6B", 7: "0.4B"}[version]
    e = estimate(size=size, version=version, method=method, rank=32, ctx_len=2048, micro_bsz=2)
    assert set(e.breakdown) == set(COMPONENTS)
    assert all(v >= 0 for v in e.breakdown.values())
    assert sum(e.breakdown.values()) == pytest.approx(e.total_gib, rel=1e-12)
    assert e.vram.phases[e.vram.peak_phase] == pytest.approx(e.total_gib)
    assert e.total_gib == pytest.approx(max(e.vram.phases.values()))


@pytest.mark.parametrize("grad_cp", [True, False])
@pytest.mark.parametrize("method", ["lora", "state", "bat", "full"])
def test_monotone_in_ctx_len_and_micro_bsz(method, grad_cp):
    kw = dict(method=method, grad_cp=grad_cp, rank=32)
    ctx = [total(ctx_len=t, **kw) for t in (16, 256, 1024, 1040, 4096, 16384)]
    assert ctx == sorted(ctx) and ctx[0] < ctx[-1]
    bsz = [total(micro_bsz=b, **kw) for b in (1, 2, 3, 8, 32)]
    assert bsz == sorted(bsz) and bsz[0] < bsz[-1]


@pytest.mark.parametrize("method", ["lora", "pissa", "miss", "bat"])
def test_monotone_in_rank(method):
    ranks = [total(method=method, rank=r, ctx_len=2048) for r in (8, 16, 32, 64, 128)]
    assert ranks == sorted(ranks) and ranks[0] < ranks[-1]


@pytest.mark.parametrize("version", [5, 6, 7])
@pytest.mark.parametrize("method", ["lora", "state", "full"])
def test_monotone_in_model_size(version, method):
    sizes = [total(size=s, version=version, method=method) for s in RELEASED[version]]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


@pytest.mark.parametrize("version,size", [(7, "0.1B"), (7, "2.9B"), (7, "13.3B"), (6, "7B"), (5, "3B")])
@pytest.mark.parametrize("method", ["lora", "miss", "state"])
def test_grad_cp_int8_and_nf4_lower_it(version, size, method):
    base = dict(size=size, version=version, method=method, ctx_len=2048, micro_bsz=2)
    assert total(**base, grad_cp=True) < total(**base, grad_cp=False)
    for grad_cp in (True, False):
        none, int8, nf4 = (total(**base, grad_cp=grad_cp, quant=q) for q in ("none", "int8", "nf4"))
        assert nf4 < int8 < none


def test_int8_and_nf4_weight_bytes():
    spec = released_spec("2.9B")
    p = count_params(spec, Config(method="state"))
    gib = {q: vram(spec, Config(method="state", quant=q)).breakdown["base_weights"] * 2**30 for q in ("none", "int8", "nf4")}
    other = p.frozen_other * 2
    assert gib["none"] == pytest.approx(other + 2 * p.frozen_linear)
    assert gib["int8"] == pytest.approx(other + p.frozen_linear + 4 * p.frozen_linear_rows)
    assert gib["nf4"] == pytest.approx(other + p.frozen_linear / 2 + 4 * p.frozen_linear / 64)
    # emb and head are never quantised
    assert len({vram(spec, Config(method="state", quant=q)).breakdown["embedding_head"] for q in gib}) == 1


def test_v7_kernel_state_checkpoints_are_counted():
    spec = released_spec("1.5B")
    tensors = dict(vram(spec, Config(grad_cp=False)).layer_detail)
    per_layer = tensors["one layer: WKV fp32 state checkpoint every 16 steps"]
    assert per_layer * 2**30 == pytest.approx(1024 * 32 * 64 * 64 / 16 * 4)


def test_targets_limit_the_adapter():
    spec = released_spec("1.5B")
    all_ = count_params(spec, Config(train_parts=())).trainable
    att = count_params(spec, Config(train_parts=(), targets=("att.receptance", "att.key", "att.value", "att.output")))
    assert att.trainable == 24 * 4 * 64 * (2048 + 2048) < all_
    assert total(targets=["att.key"]) < total()


def test_chunked_cross_entropy_avoids_full_logits():
    full = estimate(size="1.5B", ctx_len=8192, micro_bsz=4)
    chunked = estimate(size="1.5B", ctx_len=8192, micro_bsz=4, chunked_ce=True)
    assert full.vram.phases["loss"] - chunked.vram.phases["loss"] > 15  # 32k x 65536 x 10 B = 20 GiB
    assert chunked.total_gib < full.total_gib


def test_infctx_memory_follows_chunk_ctx_not_ctx_len():
    kw = dict(size="1.5B", train_type="infctx", chunk_ctx=512)
    a, b = total(ctx_len=4096, **kw), total(ctx_len=65536, **kw)
    assert a == pytest.approx(b)
    assert a < total(size="1.5B", ctx_len=4096)
    assert a > total(size="1.5B", ctx_len=512)  # plus the carried states


def test_deepspeed_sharding_and_offload_per_gpu():
    kw = dict(size="1.6B", version=6, method="full")
    one = total(strategy="deepspeed_stage_1", devices=1, **kw)
    s1 = total(strategy="deepspeed_stage_1", devices=8, **kw)
    s2 = total(strategy="deepspeed_stage_2", devices=8, **kw)
    s3 = total(strategy="deepspeed_stage_3", devices=8, **kw)
    off = total(strategy="deepspeed_stage_3_offload", devices=8, **kw)
    assert one > s1 > s2 > s3 > off
    e = estimate(strategy="deepspeed_stage_2_offload", **kw)
    assert e.breakdown["optimizer"] == 0 and e.vram.cpu_offload_gib > 10


@pytest.mark.parametrize(("kw", "match"), [
    (dict(method="dora"), "unknown method"),
    (dict(quant="fp8"), "quant 'fp8'"),
    (dict(devices=2), "needs a DeepSpeed strategy"),
    (dict(method="full", quant="nf4"), "cannot be used with method 'full'"),
    (dict(train_type="infctx", ctx_len=512, chunk_ctx=512), "chunk_ctx < ctx_len"),
    (dict(method="bat", rank=48), "divisible by rank"),
    (dict(micro_bsz=0), "micro_bsz must be a positive integer"),
    (dict(strategy="fsdp"), "strategy 'fsdp'"),
    (dict(train_parts=["att"]), "train_parts"),
    (dict(bogus=1), "unknown estimate option"),
    (dict(targets=["att.gate"]), "not a Linear of RWKV-7"),
])
def test_config_errors_name_the_value_and_the_fix(kw, match):
    with pytest.raises(ConfigError, match=match) as info:
        estimate(size="1.5B", **kw)
    assert "\n" not in info.value.one_line()
