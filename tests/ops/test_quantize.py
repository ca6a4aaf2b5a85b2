"""FP8 quantization of a norm's output (normcheck.ops.quantize): the rounding, the scale and the
rule deciding which FP8 values a correct kernel may return, on hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from normcheck.ops.quantize import (
    E4M3FN,
    E4M3FNUZ,
    E5M2,
    ROW,
    STATIC,
    TENSOR,
    Quantization,
    Rounding,
    accepted,
    as_scale,
    dynamic_scale,
    expectation,
    format_problem,
    representable,
    row_amax,
    scale_accepted,
    scale_bounds,
    static_scale,
    steps,
    to_fp8,
    values_accepted,
)

NEAREST = Rounding(E4M3FN)

# e4m3fn between 256 and 512 is spaced by 32: 256, 288, 320, 352, ...; 288 = 1.001b * 2^8 has an
# odd mantissa, 320 = 1.010b * 2^8 an even one (vLLM's #51393: 304 lies exactly between them)
E4M3_ROUNDING = [
    (300.0, 288.0),
    (303.99, 288.0),
    (303.999999999, 288.0),  # not a tie, though float32 cannot tell it from 304
    (304.0, 320.0),  # a tie: to the even mantissa
    (304.01, 320.0),
    (336.0, 320.0),  # a tie between 320 and 352: even is 320
    (-300.0, -288.0),
    (448.0, 448.0),
    (463.9, 448.0),
    (470.0, 448.0),  # beyond the largest value: clamped
    (-1e6, -448.0),
    (2.0**-9, 2.0**-9),  # the smallest subnormal
    (2.0**-10, 0.0),  # half of it: a tie with 0, whose mantissa is even
]


@pytest.mark.parametrize(("v", "q"), E4M3_ROUNDING)
def test_e4m3_rounds_to_nearest_even_and_saturates(v, q):
    assert to_fp8(np.array([v]), NEAREST)[0] == q


def test_e5m2_rounds_to_nearest_even_and_saturates():
    # two mantissa bits: 1, 1.25, 1.5, 1.75; 1.125 ties to 1, 1.375 to 1.5
    v = np.array([1.125, 1.375, 57344.0, 61000.0, -7e4])
    np.testing.assert_array_equal(to_fp8(v, Rounding(E5M2)), [1.0, 1.5, 57344.0, 57344.0, -57344.0])


def test_without_saturation_overflow_is_nan_in_e4m3fn_and_inf_in_e5m2():
    assert np.isnan(to_fp8(np.array([470.0]), Rounding(E4M3FN, saturate=False))[0])
    assert to_fp8(np.array([448.0, 463.0]), Rounding(E4M3FN, saturate=False)).tolist() == [448.0, 448.0]
    assert to_fp8(np.array([7e4]), Rounding(E5M2, saturate=False))[0] == np.inf
    assert np.isnan(to_fp8(np.array([250.0]), Rounding(E4M3FNUZ, saturate=False))[0])  # fnuz: max 240


def test_toward_zero_truncates():
    v = np.array([300.0, 319.9, -319.9, 288.0, 470.0])
    np.testing.assert_array_equal(to_fp8(v, Rounding(E4M3FN, "zero")), [288.0, 288.0, -288.0, 288.0, 448.0])


def test_steps_count_fp8_values_between():
    assert steps(np.array([288.0]), np.array([320.0]), E4M3FN)[0] == 1
    assert steps(np.array([416.0]), np.array([448.0]), E4M3FN)[0] == 1
    assert steps(np.array([256.0]), np.array([320.0]), E4M3FN)[0] == 2
    assert steps(np.array([-(2.0**-9)]), np.array([2.0**-9]), E4M3FN)[0] == 2  # -min, 0, +min
    assert steps(np.array([-0.0]), np.array([0.0]), E4M3FN)[0] == 0


def test_representable_values():
    ok = representable(np.array([288.0, 289.0, 448.0, 480.0, np.nan, 2.0**-9]), E4M3FN)
    assert ok.tolist() == [True, False, True, False, False, True]


# -- the boundary rule: one FP8 step off only within the tolerance of a rounding boundary ---------


def _accepts(v: float, t: float) -> list[float]:
    """The values between 256 and 384 accepted for v +- t."""
    candidates = np.array([256.0, 288.0, 320.0, 352.0, 384.0])
    ok = accepted(candidates, np.full(5, v), np.full(5, t), NEAREST)
    return candidates[ok].tolist()


def test_away_from_a_boundary_only_the_rounding_is_accepted():
    assert _accepts(300.0, 1.0) == [288.0]
    assert _accepts(303.9, 0.05) == [288.0]  # 0.1 from the boundary 304, beyond the tolerance
    assert _accepts(320.0, 15.9) == [320.0]  # the boundaries are 304 and 336


def test_within_the_tolerance_of_a_boundary_both_neighbours_are_accepted():
    assert _accepts(304.0, 1e-9) == [288.0, 320.0]  # exactly on it (no double rounding through float32)
    assert _accepts(303.99, 0.02) == [288.0, 320.0]
    assert _accepts(304.01, 0.02) == [288.0, 320.0]


def test_never_two_steps_off_with_a_tolerance_below_one_step():
    assert 256.0 not in _accepts(304.0, 10.0) and 352.0 not in _accepts(304.0, 10.0)


def test_without_saturation_nan_is_accepted_only_past_the_overflow_boundary():
    rounding = Rounding(E4M3FN, saturate=False)
    q = np.array([448.0, np.nan])
    # e4m3fn overflows from 464 (the midpoint of 448 and the missing 480)
    assert accepted(q, np.full(2, 470.0), np.full(2, 1.0), rounding).tolist() == [False, True]
    assert accepted(q, np.full(2, 464.0), np.full(2, 1.0), rounding).tolist() == [True, True]
    assert accepted(q, np.full(2, 450.0), np.full(2, 1.0), rounding).tolist() == [True, False]


def test_a_wider_float_must_hold_fp8_values():
    y, err, scale = np.array([300.0, 304.0]), np.zeros(2), np.ones(2)
    q = np.array([288.0, 305.0])  # 305 lies between the accepted 288 and 320 but is no e4m3 value
    assert values_accepted(q, y, err, scale, NEAREST, exact_format=False).tolist() == [True, False]


def test_format_of_the_returned_values():
    assert format_problem("float8_e4m3fn", E4M3FN) is None
    assert format_problem("float32", E4M3FN) is None  # values checked one by one
    assert format_problem("float8_e4m3fnuz", E4M3FN) == "returned float8_e4m3fnuz, not float8_e4m3fn"
    assert format_problem("float8_e5m2", E4M3FN) == "returned float8_e5m2, not float8_e4m3fn"


# -- the scale ---------------------------------------------------------------------------------


def test_dynamic_scale_is_amax_over_fp8_max_in_float32_with_vllms_minimum():
    s = dynamic_scale(np.array([2.0, 0.0, 1e-4]), 448.0, E4M3FN.min_scale)
    assert s[0] == float(np.float32(2.0) / np.float32(448.0))
    assert s[1] == s[2] == E4M3FN.min_scale == float(np.float32(1.0) / np.float32(448.0 * 512.0))
    assert E5M2.min_scale == float(np.float32(1.0) / np.float32(57344.0 * 512.0))


def test_scale_bounds_allow_ys_error_at_the_amax_and_four_float32_roundings():
    amax = np.array([2.0])
    scale, lo, hi = scale_bounds(amax, 448.0, E4M3FN.min_scale, rtol=1e-3, atol=1e-5)
    half = (1e-5 + 1e-3 * 2.0) / 448.0 + 4 * 2.0**-24 * scale[0]
    assert hi[0] - scale[0] == pytest.approx(half) and scale[0] - lo[0] == pytest.approx(half)


def test_below_the_minimum_scale_any_scale_up_to_it_is_accepted():
    amax = np.array([1e-4])  # amax / 448 = 2.2e-7, below 1 / (448 * 512) = 4.4e-6
    _, lo, hi = scale_bounds(amax, 448.0, E4M3FN.min_scale, rtol=0.0, atol=0.0)
    for s in (float(np.float32(1e-4) / np.float32(448.0)), 1e-6, E4M3FN.min_scale):
        assert scale_accepted(np.array([s]), lo, hi)[0]
    assert not scale_accepted(np.array([1e-5]), lo, hi)[0]
    assert not scale_accepted(np.array([0.0]), np.array([0.0]), np.array([1.0]))[0]  # 0 cannot be divided by


def test_static_scale_makes_the_largest_values_saturate():
    y = np.array([[1.0, -3.5], [2.0, 0.5]])
    s = static_scale(y, E4M3FN)
    assert s.shape == () and s == float(np.float32(0.8) * np.float32(3.5) / np.float32(448.0))
    assert 3.5 / s > 448.0  # clamped: 1.25 * 448


def test_row_amax_per_row_and_per_tensor():
    y = np.array([[[1.0, -4.0]], [[2.0, 3.0]]])  # (2, 1, 2), rows over the last axis
    np.testing.assert_array_equal(row_amax(y, (2,), ROW), [[[4.0]], [[3.0]]])
    np.testing.assert_array_equal(row_amax(y, (2,), TENSOR), [[[4.0]]])


def test_a_returned_scale_is_one_per_row_or_one_for_the_tensor():
    shape, axes = (2, 5, 33), (2,)
    assert as_scale(np.ones((10, 1)), shape, axes).shape == (2, 5, 1)
    assert as_scale(np.ones((2, 5)), shape, axes).shape == (2, 5, 1)
    assert as_scale(np.ones(()), shape, axes).shape == (1, 1, 1)
    assert as_scale(np.ones((5, 1)), shape, axes) is None


# -- a whole case by hand ----------------------------------------------------------------------


def test_rms_norm_of_three_four_quantizes_to_a_tie_both_neighbours_accepted():
    # RMS norm of (3, 4), eps 0, no weight: rms = sqrt(12.5), y = (3, 4) / sqrt(12.5); per row the
    # scale is amax / 448, so y / scale = (336, 448): 336 lies exactly between 320 and 352
    y = np.array([[3.0, 4.0]]) / np.sqrt(12.5)
    exp = expectation(y, (1,), Quantization("e4m3", ROW), rtol=1.3e-6, atol=1e-5, given=None)
    assert exp.scale[0, 0] == float(np.float32(np.float32(4.0 / np.sqrt(12.5)) / np.float32(448.0)))
    for q in ([[320.0, 448.0]], [[352.0, 448.0]]):
        assert values_accepted(np.array(q), y, exp.y_err, exp.scale, exp.rounding, exact_format=True).all()
    assert not values_accepted(np.array([[288.0, 448.0]]), y, exp.y_err, exp.scale, exp.rounding, True)[0, 0]
    assert not values_accepted(np.array([[320.0, 416.0]]), y, exp.y_err, exp.scale, exp.rounding, True)[0, 1]


def test_a_static_scale_is_expected_exactly():
    y = np.array([[1.0, 2.0]])
    exp = expectation(y, (1,), Quantization("e4m3", STATIC), 1e-3, 1e-5, given=np.array(0.004))
    assert exp.scale.shape == (1, 1) and exp.lo[0, 0] == exp.hi[0, 0] == 0.004
    nudged = np.nextafter(np.float32(0.004), np.float32(1.0))
    assert not scale_accepted(np.array([[float(nudged)]]), exp.lo, exp.hi)[0, 0]
