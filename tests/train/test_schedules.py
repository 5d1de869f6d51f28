import math

import pytest

from rwkv_tune.train.schedules import learning_rate


def lrs(schedule, total=100, warmup=0, lr_init=1e-3, lr_final=1e-4):
    return [learning_rate(s, total_steps=total, lr_init=lr_init, lr_final=lr_final, schedule=schedule,
                          warmup_steps=warmup) for s in range(total)]


@pytest.mark.parametrize("schedule", ["cos_decay", "wsd"])
def test_decays_from_lr_init_to_exactly_lr_final(schedule):
    values = lrs(schedule)
    assert values[0] == pytest.approx(1e-3) and values[-1] == pytest.approx(1e-4)
    assert all(a >= b - 1e-15 for a, b in zip(values, values[1:], strict=False))


def test_wsd_is_stable_then_decays():
    values = lrs("wsd")
    assert values[50] == pytest.approx(1e-3) and values[90] < 1e-3


def test_cos_midpoint_and_constant_and_warmup():
    values = lrs("cos_decay", total=101)
    assert values[50] == pytest.approx((1e-3 + 1e-4) / 2)
    assert set(lrs("constant")) == {1e-3}
    warm = lrs("cos_decay", warmup=10)
    assert warm[0] == pytest.approx(1e-4) and warm[9] == pytest.approx(1e-3) and not math.isnan(warm[-1])
