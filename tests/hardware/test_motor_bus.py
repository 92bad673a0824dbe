"""Normalisation and calibration maths shared by the servo buses (no I/O)."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware.motor_bus import MotorCalibration, NormMode, from_normalized, to_normalized

CAL = MotorCalibration(homing_offset_ticks=0, range_min_ticks=1000, range_max_ticks=3000)
FLIPPED = MotorCalibration(0, 1000, 3000, inverted=True)


@pytest.mark.parametrize(
    "mode, cal, ticks, value",
    [
        (NormMode.RADIANS, CAL, 2048, 0.0),
        (NormMode.RADIANS, CAL, 2560, math.pi / 4),
        (NormMode.RADIANS, FLIPPED, 2560, -math.pi / 4),
        (NormMode.RANGE_M100_100, CAL, 1000, -100.0),
        (NormMode.RANGE_M100_100, CAL, 2000, 0.0),
        (NormMode.RANGE_M100_100, FLIPPED, 3000, -100.0),
        (NormMode.RANGE_0_100, CAL, 3000, 100.0),
        (NormMode.RANGE_0_100, FLIPPED, 3000, 0.0),
    ],
    ids=["rad-zero-at-half-turn", "rad-eighth-turn", "rad-inverted", "m100-at-min", "m100-mid",
         "m100-inverted", "0-100-at-max", "0-100-inverted"],
)
def test_known_points(mode, cal, ticks, value):
    assert to_normalized(ticks, mode, cal, 4096) == pytest.approx(value)
    assert from_normalized(value, mode, cal, 4096) == ticks


@pytest.mark.parametrize("mode", list(NormMode), ids=[m.value for m in NormMode])
@pytest.mark.parametrize("cal", [CAL, FLIPPED], ids=["direct", "inverted"])
@settings(max_examples=60, deadline=None, database=None)
@given(ticks=st.integers(1000, 3000))
def test_round_trip_inside_the_range(mode, cal, ticks):
    assert from_normalized(to_normalized(ticks, mode, cal, 4096), mode, cal, 4096) == ticks


@pytest.mark.parametrize("mode", list(NormMode), ids=[m.value for m in NormMode])
def test_goals_are_clamped_into_the_calibrated_range(mode):
    assert from_normalized(1e6, mode, CAL, 4096) in (1000, 3000)
    assert from_normalized(-1e6, mode, CAL, 4096) in (1000, 3000)


def test_readings_outside_the_range_are_not_clamped():
    assert to_normalized(3500, NormMode.RANGE_0_100, CAL, 4096) == pytest.approx(125.0)


def test_calibration_range_must_be_ordered():
    with pytest.raises(ValueError, match=r"range_min_ticks \(3000\) must be below range_max_ticks \(1000\)"):
        MotorCalibration(0, 3000, 1000)
