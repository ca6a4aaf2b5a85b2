"""quantize: exact rounding into each dtype, checked against NumPy and ml_dtypes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from normcheck.dtypes import DTYPES, EPS, MAX, compute_dtype, quantize


def _values(seed=0):
    rng = np.random.default_rng(seed)
    parts = [
        rng.standard_normal(20000),
        rng.standard_normal(5000) * 1e4,
        rng.standard_normal(5000) * 1e-6,
        rng.uniform(-7e4, 7e4, 5000),
        np.array([0.0, -0.0, 1.0, -1.0, 0.5, 2.0**-24, 2.0**-149, 1e-300, 65504.0, 65520.0, 7e4, 1e39, -1e39]),
    ]
    return np.concatenate(parts)


def test_quantize_returns_float64_copy():
    a = np.array([1.0, 2.5, -3.25])
    for dtype in DTYPES:
        q = quantize(a, dtype)
        assert q.dtype == np.float64
        np.testing.assert_array_equal(q, a)
        assert q is not a and not np.shares_memory(q, a)


def test_quantize_float64_is_identity():
    v = _values()
    np.testing.assert_array_equal(quantize(v, "float64"), v)


def test_quantize_float32_matches_numpy():
    v = _values()
    with np.errstate(over="ignore"):
        want = v.astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(quantize(v, "float32"), want)
    assert not np.array_equal(want, v)  # some values actually round


def test_quantize_float16_matches_numpy():
    v = _values(1)
    with np.errstate(over="ignore"):
        want = v.astype(np.float16).astype(np.float64)
    got = quantize(v, "float16")
    np.testing.assert_array_equal(got, want)
    assert np.isinf(quantize(np.array([7e4, -7e4]), "float16")).all()
    assert quantize(np.array([65504.0]), "float16")[0] == 65504.0
    # ties to even in float16: 1 + 2^-11 is halfway between 1 and 1 + 2^-10
    assert quantize(np.array([1 + 2.0**-11]), "float16")[0] == 1.0
    assert quantize(np.array([1 + 3 * 2.0**-11]), "float16")[0] == 1 + 2.0**-9


def test_quantize_bfloat16_matches_ml_dtypes():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    with np.errstate(over="ignore"):
        v = np.concatenate([_values(2), _values(3).astype(np.float32).astype(np.float64)])
        want = v.astype(ml_dtypes.bfloat16).astype(np.float64)
        got = quantize(v, "bfloat16")
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(got, v)


def test_quantize_bfloat16_ties_to_even_matches_ml_dtypes():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    ulp = 2.0**-7  # bfloat16's spacing in [1, 2)
    halfway = np.array(
        [
            1 + 0.5 * ulp,  # between 1 (even) and 1 + ulp (odd): down
            1 + 1.5 * ulp,  # between 1 + ulp (odd) and 1 + 2 ulp (even): up
            1 + 2.5 * ulp,  # down to 1 + 2 ulp
            -(1 + 1.5 * ulp),  # sign symmetric
            256 + 1.0,  # spacing 2 at 256: halfway between 256 and 258, down to even
            256 + 3.0,  # halfway between 258 and 260: up to 260
        ]
    )
    want = np.array([1.0, 1 + 2 * ulp, 1 + 2 * ulp, -(1 + 2 * ulp), 256.0, 260.0])
    got = quantize(halfway, "bfloat16")
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(halfway.astype(ml_dtypes.bfloat16).astype(np.float64), want)
    # just off the tie rounds to nearest
    np.testing.assert_array_equal(
        quantize(np.array([1 + 0.5 * ulp + 2.0**-20, 1 + 1.5 * ulp - 2.0**-20]), "bfloat16"), [1 + ulp, 1 + ulp]
    )


def test_quantize_bfloat16_special_values():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, MAX["bfloat16"], 3.4e38, -3.4e38, 1e-40, -1e-40])
    got = quantize(special, "bfloat16")
    with np.errstate(over="ignore"):
        want = special.astype(ml_dtypes.bfloat16).astype(np.float64)
    np.testing.assert_array_equal(got, want)  # NaNs compare equal in assert_array_equal
    assert np.isnan(got[0])
    assert got[1] == np.inf and got[2] == -np.inf
    assert np.signbit(got[4])
    assert got[5] == MAX["bfloat16"]
    assert got[6] == np.inf and got[7] == -np.inf  # above bfloat16's max + half an ulp


def test_quantize_bfloat16_results_have_8_bit_significands():
    v = _values(4)
    with np.errstate(over="ignore"):
        q = quantize(v, "bfloat16").astype(np.float32)
    assert not np.any(q.view(np.uint32) & 0xFFFF)
    # and the rounding is to a nearest neighbour: error at most half an ulp (relative 2^-8)
    finite = np.isfinite(q) & (np.abs(v) > 1e-30) & (np.abs(v) < 1e38)
    rel = np.abs(q[finite].astype(np.float64) - v[finite]) / np.abs(v[finite])
    assert rel.max() <= 2.0**-8 * (1 + 1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_quantize_is_idempotent(dtype):
    with np.errstate(over="ignore"):
        q = quantize(_values(5), dtype)
        np.testing.assert_array_equal(quantize(q, dtype), q)


@pytest.mark.parametrize("dtype", DTYPES)
def test_eps_and_max_tables(dtype):
    one_up = quantize(np.array([1.0 + EPS[dtype]]), dtype)[0]
    assert one_up == 1.0 + EPS[dtype]  # representable
    assert quantize(np.array([1.0 + 0.4 * EPS[dtype]]), dtype)[0] == 1.0
    assert quantize(np.array([MAX[dtype]]), dtype)[0] == MAX[dtype]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_quantize_overflow_to_inf_is_silent(dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = quantize(np.array([1e39, -1e39]), dtype)
    np.testing.assert_array_equal(got, [np.inf, -np.inf])


def test_compute_dtype():
    assert compute_dtype("float64") is np.float64
    for dtype in ("float32", "float16", "bfloat16"):
        assert compute_dtype(dtype) is np.float32


def test_round_float32_is_quantize_without_its_float64_copies():
    """Bit for bit, on values of every magnitude and on the bit patterns where bfloat16's rounding
    carries out of the exponent (the largest finite values, infinities and NaN payloads)."""
    from normcheck.dtypes import round_float32

    special = np.array(
        [0x7F7F7FFF, 0x7F7F8000, 0x7F7FFFFF, 0x7F800000, 0x7F800001, 0x7FFF8000, 0xFF7F8000, 0xFFFF8000, 0xFFFFFFFF],
        dtype=np.uint32,
    ).view(np.float32)
    values = np.concatenate([_values().astype(np.float32), special])
    for dtype in ("bfloat16", "float16", "float32"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = quantize(values, dtype).astype(np.float32)
            got = round_float32(values, dtype)
        assert got.dtype == np.float32
        same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
        assert same.all(), (dtype, values[~same][:5])
