"""The learning-rate schedule against values written down by hand, not against its own formula."""
import pytest

from optimizers.schedule import lr_factor


def factors(total, warmup, min_ratio=0.1):
    return [lr_factor(s, total_steps=total, warmup_steps=warmup, min_ratio=min_ratio) for s in range(total)]


def test_eleven_steps_with_four_of_warmup_step_by_step():
    # warm-up (step+1)/4; then cosine over the 6 steps from 4 to 10, at 0, 30, 60, ..., 180 degrees:
    # 0.1 + 0.45 * (1 + cos): cos 30 = 0.8660254 -> 0.9397114, cos 60 = 0.5 -> 0.775, cos 90 -> 0.55 (middle)
    expected = [0.25, 0.5, 0.75, 1.0,                        # steps 0..3 (warmup - 1 = 3 reaches the peak)
                1.0, 0.9397114, 0.775, 0.55, 0.325, 0.1602886, 0.1]  # steps 4 (peak) .. 10 (last: min)
    assert factors(11, 4) == pytest.approx(expected, abs=1e-7)


def test_the_paper_schedule_at_its_landmarks():
    # 1000 updates, 100 of warm-up, floor 10%: the first update already moves (1%), the peak is held
    # at steps 99 and 100, the last update is at exactly 10% of the peak
    values = factors(1000, 100)
    assert values[0] == pytest.approx(0.01)
    assert values[49] == pytest.approx(0.5)
    assert values[99] == values[100] == pytest.approx(1.0)
    assert values[999] == pytest.approx(0.1)
    # step 549 is 449 of the 899 decay steps in: 0.1 + 0.45 * (1 + cos(pi * 449/899)) = 0.55078627
    assert values[549] == pytest.approx(0.55078627, abs=1e-8)


def test_schedule_is_monotone_up_then_down():
    values = factors(1000, 100)
    assert all(a < b for a, b in zip(values[:99], values[1:100]))
    assert all(a >= b for a, b in zip(values[100:], values[101:]))
    assert min(values) == pytest.approx(0.01) and min(values[100:]) == pytest.approx(0.1)


def test_no_warmup_starts_at_peak_and_another_floor():
    # 5 steps, cosine from step 0 to step 4 at 0, 45, 90, 135, 180 degrees, floor 0:
    # 0.5 * (1 + cos): 1, 0.8535534, 0.5, 0.1464466, 0
    assert factors(5, 0, min_ratio=0.0) == pytest.approx([1.0, 0.8535534, 0.5, 0.1464466, 0.0], abs=1e-7)


def test_warmup_as_long_as_the_run_never_decays():
    assert factors(4, 4) == pytest.approx([0.25, 0.5, 0.75, 1.0])
