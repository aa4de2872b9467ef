import math

import pytest

from optimizers.schedule import lr_factor

TOTAL, WARMUP, MIN = 1000, 100, 0.1


def factor(step):
    return lr_factor(step, total_steps=TOTAL, warmup_steps=WARMUP, min_ratio=MIN)


def test_warmup_is_linear_from_zero_and_the_first_update_moves():
    assert factor(0) == pytest.approx(1 / WARMUP)
    assert factor(49) == pytest.approx(50 / WARMUP)
    assert factor(WARMUP - 1) == pytest.approx(1.0)


def test_cosine_decay_from_peak_to_ten_percent_at_the_last_update():
    assert factor(WARMUP) == pytest.approx(1.0)
    middle = WARMUP + (TOTAL - 1 - WARMUP) / 2
    assert factor(int(middle)) == pytest.approx(
        MIN + (1 - MIN) * 0.5 * (1 + math.cos(math.pi * (int(middle) - WARMUP) / (TOTAL - 1 - WARMUP))))
    assert factor(TOTAL - 1) == pytest.approx(MIN)


def test_schedule_is_monotone_up_then_down():
    values = [factor(s) for s in range(TOTAL)]
    assert all(a <= b for a, b in zip(values[:WARMUP], values[1:WARMUP]))
    assert all(a >= b for a, b in zip(values[WARMUP:], values[WARMUP + 1:]))
    assert min(values[WARMUP:]) == pytest.approx(MIN)


def test_no_warmup_starts_at_peak():
    assert lr_factor(0, total_steps=10, warmup_steps=0, min_ratio=0.1) == pytest.approx(1.0)
