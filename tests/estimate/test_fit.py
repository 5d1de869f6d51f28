"""Which GPUs fit, the largest micro_bsz/ctx_len on a card, the knobs that fix an OOM, and the speed."""

from __future__ import annotations

from dataclasses import replace

import pytest

from rwkv_tune.errors import ConfigError
from rwkv_tune.estimate import GPUS, estimate, find_gpu, released_spec
from rwkv_tune.estimate.config import Config
from rwkv_tune.estimate.fit import (
    fits,
    fitting_gpus,
    fix,
    knobs,
    max_ctx_len,
    max_micro_bsz,
    oom_advice,
    usable_gib,
)
from rwkv_tune.estimate.timing import flops_per_token
from rwkv_tune.estimate.vram import count_params, vram


def test_gpu_table_covers_the_common_memory_sizes():
    nominal = {int(g.name.split()[-1].removesuffix("GB")) for g in GPUS}
    assert {8, 12, 16, 24, 32, 40, 48, 80, 94, 141} <= nominal
    for name in ("RTX 3060 12GB", "RTX 4060 Ti 16GB", "RTX 3090 24GB", "RTX 4090 24GB", "RTX 5090 32GB", "A100 40GB",
                 "A100 80GB", "RTX A6000 48GB", "L40S 48GB", "H100 80GB", "H100 NVL 94GB", "H200 141GB"):
        assert find_gpu(name).name == name


def test_find_gpu_by_alias_memory_and_errors():
    assert find_gpu("4090").name == "RTX 4090 24GB"
    assert find_gpu("rtx-4090").name == "RTX 4090 24GB"
    assert find_gpu("NVIDIA H100").name == "H100 80GB"
    assert find_gpu("a100 80gb").name == "A100 80GB"
    assert find_gpu("24GB").memory_gib == 24
    with pytest.raises(ConfigError, match="ambiguous: A100 40GB, A100 80GB"):
        find_gpu("a100")
    with pytest.raises(ConfigError, match="unknown --gpu 'tpu'"):
        find_gpu("tpu")


def test_fitting_gpus_are_exactly_those_with_room():
    e = estimate(size="2.9B", method="lora", ctx_len=4096, micro_bsz=2)
    assert e.gpus_fit == [g for g in GPUS if e.total_gib <= usable_gib(g)]
    assert e.gpus_fit and e.gpus_fit != list(GPUS)
    assert e.target == e.gpus_fit[0] and e.fits_target


@pytest.mark.parametrize("gpu", ["4090", "3060", "A100 80GB"])
@pytest.mark.parametrize("method", ["lora", "state"])
def test_max_micro_bsz_and_ctx_len_are_the_largest_that_fit(gpu, method):
    spec, card = released_spec("1.5B"), find_gpu(gpu)
    cfg = Config(method=method, ctx_len=2048)
    b = max_micro_bsz(spec, cfg, card)
    assert b >= 1
    assert fits(vram(spec, replace(cfg, micro_bsz=b)).total_gib, card)
    assert not fits(vram(spec, replace(cfg, micro_bsz=b + 1)).total_gib, card)
    t = max_ctx_len(spec, cfg, card)
    assert t and t % 16 == 0
    assert fits(vram(spec, replace(cfg, ctx_len=t)).total_gib, card)
    assert not fits(vram(spec, replace(cfg, ctx_len=t + 16)).total_gib, card)


def test_nothing_fits_gives_zero_and_infctx_gives_no_ctx_limit():
    spec, card = released_spec("13.3B"), find_gpu("3060")
    assert max_micro_bsz(spec, Config(), card) == 0
    assert max_ctx_len(spec, Config(train_type="infctx", ctx_len=4096), card) is None


def test_knobs_each_lower_the_peak_and_say_by_how_much():
    spec, card = released_spec("7.2B"), find_gpu("4090")
    cfg = Config(ctx_len=4096, micro_bsz=4, grad_cp=False)
    base = vram(spec, cfg).total_gib
    ks = knobs(spec, cfg, card)
    names = {k.knob for k in ks}
    assert {"grad_cp", "quant", "micro_bsz", "train_type", "strategy", "rank", "ctx_len"} <= names
    for k in ks:
        assert k.saves_gib == pytest.approx(base - k.total_gib) and k.saves_gib > 0
        assert k.fits == fits(k.total_gib, card)
    nf4 = next(k for k in ks if k.change == "none→nf4")
    p = count_params(spec, cfg)
    assert vram(spec, cfg).peak_phase == "loss"  # no weight is dequantised at that moment
    assert nf4.saves_gib * 2**30 == pytest.approx(p.frozen_linear * (2 - 0.5 - 4 / 64))


def test_fix_makes_it_fit_without_changing_what_is_learned():
    e = estimate(size="14B", method="lora", ctx_len=4096, micro_bsz=4, grad_cp=False, gpu="4090")
    assert not e.fits_target and e.fix is not None
    assert e.fix.fits and fits(e.fix.total_gib, e.target)
    assert "--grad-cp" in e.fix.flags and "--ctx-len" not in e.fix.flags and "--rank" not in e.fix.flags
    assert e.fix.total_gib == pytest.approx(e.total_gib - e.fix.saves_gib)
    spec = released_spec("14B")
    assert fix(spec, Config(), find_gpu("4GB")) is None  # no memory-only knob fits 13B weights in 4 GiB


def test_oom_advice_names_preset_keys_and_keeps_what_is_learned_first():
    spec = released_spec("7.2B")
    advice = oom_advice(spec, Config(ctx_len=4096, micro_bsz=4, grad_cp=False))
    assert len(advice) == 4 and advice[0].startswith("train.grad_cp ")
    assert not any(a.startswith(("data.ctx_len", "method.r")) for a in advice)  # memory-only changes come first
    assert oom_advice(spec, Config(ctx_len=4096, micro_bsz=4, grad_cp=False), limit=1) == ["train.grad_cp off→on"]


def test_fitting_gpus_is_monotone_in_the_peak():
    assert len(fitting_gpus(5)) >= len(fitting_gpus(10)) >= len(fitting_gpus(50)) >= len(fitting_gpus(500)) == 0


def test_flops_per_token_frozen_base_is_about_4n_plus_recompute():
    spec = released_spec("2.9B")
    p = count_params(spec, Config(method="state"))
    n = p.matmul_params
    no_cp = flops_per_token(spec, Config(method="state", grad_cp=False), p)
    assert 4 * n < no_cp < 4.1 * n
    pf = count_params(spec, Config(method="full"))
    full = flops_per_token(spec, Config(method="full", grad_cp=False), pf)
    assert 6 * n < full < 6.1 * n
    assert flops_per_token(spec, Config(method="state"), p) > no_cp  # grad_cp recomputes the forward


def test_time_is_tokens_over_throughput_and_grows_with_size():
    small = estimate(size="0.4B", gpu="4090", tokens=10**8)
    big = estimate(size="2.9B", gpu="4090", tokens=10**8)
    for e in (small, big):
        assert e.timing.time_s == pytest.approx(10**8 / e.timing.tokens_per_s)
    assert big.timing.tokens_per_s < small.timing.tokens_per_s
    steps = estimate(size="0.4B", gpu="4090", epoch_steps=100, epoch_count=2, micro_bsz=2, ctx_len=512)
    assert steps.timing.tokens == 100 * 2 * 2 * 512
    slower = estimate(size="0.4B", gpu="4090", quant="nf4")
    assert slower.timing.tokens_per_s < small.timing.tokens_per_s
    assert estimate(size="0.4B", gpu="24GB").timing.tokens_per_s is None  # unknown card: no speed
