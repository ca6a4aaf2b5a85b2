"""compare(), the tolerance rule and the witness that sizes it."""

from __future__ import annotations

import numpy as np
import pytest

from normcheck.dtypes import EPS, quantize
from normcheck.ops import OPS, OpParams
from normcheck.reference import reference
from normcheck.verify.inputs import make_problem
from normcheck.verify.records import Tolerance
from normcheck.verify.tolerance import (
    CONDITIONING_FACTOR,
    DTYPE_TOLERANCES,
    compare,
    out_of_range,
    tolerance_for,
    witness_errors,
)

LAYER_EPS = 1e-5


def _tol(rtol, atol):
    return Tolerance(rtol=rtol, atol=atol, floor_atol=atol, witness_err=0.0, source="user")


# -- compare --------------------------------------------------------------------------------


def test_compare_counts_mismatches_and_reports_errors():
    expected = np.array([[1.0, 2.0, -4.0], [0.5, 10.0, 0.0]])
    actual = np.array([[1.0, 2.05, -4.5], [0.5, 10.9, 0.0]])
    # allowance atol + rtol*|e| = 0.01 + 0.05*|e|: [0.06, 0.11, 0.21, 0.035, 0.51, 0.01]
    c = compare(actual, expected, _tol(0.05, 0.01))
    assert c.numel == 6
    assert c.mismatched == 2  # -4.5 vs -4 (0.5 > 0.21) and 10.9 vs 10 (0.9 > 0.51)
    assert c.max_abs_err == pytest.approx(0.9)
    assert c.max_rel_err == pytest.approx(0.125)  # 0.5 / 4
    assert c.mismatched_pct == pytest.approx(100 * 2 / 6)
    # the worst element is the one furthest past its allowance: 0.9 - 0.51 = 0.39 > 0.5 - 0.21 = 0.29
    assert c.worst_index == (1, 1)


def test_compare_worst_index_is_by_excess_not_by_absolute_error():
    expected = np.array([100.0, 1.0, 3.0])
    actual = np.array([105.0, 1.5, 3.0])
    c = compare(actual, expected, _tol(0.1, 0.0))
    assert c.max_abs_err == 5.0  # at index 0, within its allowance of 10
    assert c.mismatched == 1
    assert c.worst_index == (1,)
    assert c.max_rel_err == pytest.approx(0.5)


def test_compare_all_within_tolerance():
    rng = np.random.default_rng(0)
    e = rng.standard_normal((3, 4, 5))
    a = e * (1 + 1e-7)
    c = compare(a, e, _tol(1e-6, 0.0))
    assert c.mismatched == 0
    assert c.max_rel_err == pytest.approx(1e-7, rel=1e-3)
    assert len(c.worst_index) == 3


def test_compare_boundary_is_inclusive():
    c = compare(np.array([1.5]), np.array([1.0]), _tol(0.25, 0.25))
    assert c.mismatched == 0
    c = compare(np.array([1.5000001]), np.array([1.0]), _tol(0.25, 0.25))
    assert c.mismatched == 1


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_actual_is_a_mismatch_with_infinite_error(bad):
    expected = np.array([[1.0, 2.0], [3.0, 4.0]])
    actual = expected.copy()
    actual[1, 0] = bad
    c = compare(actual, expected, _tol(1e9, 1e9))  # no finite tolerance saves it
    assert c.mismatched == 1
    assert c.max_abs_err == np.inf
    assert c.max_rel_err == np.inf
    assert c.worst_index == (1, 0)


def test_compare_relative_error_at_zero_expected():
    c = compare(np.array([0.0, 1e-3]), np.array([0.0, 0.0]), _tol(0.0, 1e-2))
    assert c.mismatched == 0
    assert c.max_rel_err == np.inf  # nonzero error where zero was expected
    c = compare(np.array([0.0, 1.0]), np.array([0.0, 1.0]), _tol(0.0, 0.0))
    assert (c.max_abs_err, c.max_rel_err, c.mismatched) == (0.0, 0.0, 0)


def test_compare_empty():
    c = compare(np.zeros((0, 3)), np.zeros((0, 3)), _tol(1e-3, 1e-3))
    assert (c.max_abs_err, c.max_rel_err, c.mismatched, c.numel, c.worst_index) == (0.0, 0.0, 0, 0, None)
    assert c.mismatched_pct == 0.0


def test_compare_accepts_float32_actuals():
    e = np.array([1.0 / 3.0])
    a = np.array([1.0 / 3.0], dtype=np.float32)
    c = compare(a, e, _tol(0.0, 0.0))
    assert c.mismatched == 1
    assert 0 < c.max_abs_err < 2**-24


# -- tolerance_for, out_of_range -------------------------------------------------------------


@pytest.mark.parametrize("dtype", list(DTYPE_TOLERANCES))
def test_tolerance_for_adds_conditioning_allowance(dtype):
    rtol, atol = DTYPE_TOLERANCES[dtype]
    t = tolerance_for(dtype, 0.0)
    assert (t.rtol, t.atol, t.floor_atol, t.witness_err, t.source) == (rtol, atol, atol, 0.0, "dtype")
    assert "(cond)" not in t.describe()
    t = tolerance_for(dtype, 0.25)
    assert t.rtol == rtol
    assert t.atol == pytest.approx(atol + CONDITIONING_FACTOR * 0.25)
    assert t.floor_atol == atol
    assert t.witness_err == 0.25
    assert "(cond)" in t.describe()


def test_conditioning_factor_is_eight():
    assert CONDITIONING_FACTOR == 8.0
    assert tolerance_for("float64", 1.0).atol == pytest.approx(1e-7 + 8.0)


def test_user_tolerance_replaces_the_table():
    t = tolerance_for("float16", 0.0, user=(0.5, 0.125))
    assert (t.rtol, t.atol, t.floor_atol, t.source) == (0.5, 0.125, 0.125, "user")
    t = tolerance_for("float16", 0.01, user=(0.5, 0.125))
    assert t.rtol == 0.5
    assert t.atol == pytest.approx(0.125 + CONDITIONING_FACTOR * 0.01)
    assert t.floor_atol == 0.125


def test_dtype_tolerance_table():
    assert DTYPE_TOLERANCES["float32"] == (1.3e-6, 1e-5)
    assert DTYPE_TOLERANCES["float16"] == (1e-3, 1e-5)
    assert DTYPE_TOLERANCES["bfloat16"] == (1.6e-2, 1e-5)


def test_out_of_range():
    assert out_of_range(np.array([1.0, -65504.0]), "float16") is None
    msg = out_of_range(np.array([1.0, -7e4]), "float16")
    assert msg is not None and "float16" in msg and "7e+04" in msg
    assert out_of_range(np.array([7e4]), "bfloat16") is None
    assert out_of_range(np.array([1e39]), "float32") is not None
    assert out_of_range(np.array([1e39]), "bfloat16") is not None
    assert out_of_range(np.array([1e300]), "float64") is None
    assert out_of_range(np.zeros(0), "float16") is None


# -- witness_errors ------------------------------------------------------------------------------

WITNESS_CASES = [
    ("bn", (4, 3, 3, 3), OpParams(mode="train", running_stats=True)),
    ("bn", (4, 3, 3, 3), OpParams(mode="eval", running_stats=True)),
    ("ln", (4, 24), OpParams(normalized_ndim=1)),
    ("in", (2, 3, 4, 4), OpParams()),
    ("gn", (2, 6, 4, 4), OpParams(groups=2)),
    ("rms", (4, 24), OpParams(normalized_ndim=1)),
]
WITNESS_IDS = [f"{op}-{p.label()}" for op, _, p in WITNESS_CASES]


@pytest.mark.parametrize(("op", "shape", "params"), WITNESS_CASES, ids=WITNESS_IDS)
def test_witness_is_tiny_for_float64(op, shape, params):
    p = make_problem(op, shape, params, "float64", "normal", LAYER_EPS, seed=0)
    expected = reference(p)
    w = witness_errors(p, expected)
    assert set(w) == set(expected)
    for check, err in w.items():
        scale = max(1.0, float(np.abs(expected[check]).max()))
        assert 0.0 <= err < 1e-12 * scale, check


@pytest.mark.parametrize(("op", "shape", "params"), WITNESS_CASES, ids=WITNESS_IDS)
def test_witness_sees_the_dtype_rounding(op, shape, params):
    """For half types the witness error is about one rounding into the dtype, never zero."""
    p = make_problem(op, shape, params, "float16", "normal", LAYER_EPS, seed=0)
    expected = reference(p)
    w = witness_errors(p, expected)
    for check in ("forward", "grad_input"):
        peak = float(np.abs(expected[check]).max())
        assert 0.0 < w[check] <= 2 * EPS["float16"] * peak, check


CENTERED_CASES = [c for c in WITNESS_CASES if c[0] != "rms"]


@pytest.mark.parametrize(
    ("op", "shape", "params"), CENTERED_CASES, ids=[f"{op}-{p.label()}" for op, _, p in CENTERED_CASES]
)
def test_witness_larger_for_large_mean_than_normal(op, shape, params):
    """Subtracting a large mean cancels digits: centered ops are ill-conditioned on large_mean data."""
    normal = make_problem(op, shape, params, "float32", "normal", LAYER_EPS, seed=1)
    large = make_problem(op, shape, params, "float32", "large_mean", LAYER_EPS, seed=1)
    w_normal = witness_errors(normal, reference(normal))
    w_large = witness_errors(large, reference(large))
    assert w_normal["forward"] < 1e-5
    assert w_large["forward"] > 100 * w_normal["forward"]
    assert w_large["grad_input"] > w_normal["grad_input"]


def test_rms_norm_is_well_conditioned_on_large_mean():
    """RMS norm subtracts nothing, so large_mean data do not inflate its witness."""
    problem = make_problem("rms", (4, 24), OpParams(normalized_ndim=1), "float32", "large_mean", LAYER_EPS, seed=1)
    expected = reference(problem)
    w = witness_errors(problem, expected)
    assert w["forward"] < 1e-5 * max(1.0, float(np.abs(expected["forward"]).max()))


def test_witness_bounds_every_correct_variant():
    """Each witness variant, rounded to the dtype, is within its own witness error (by definition)."""
    p = make_problem("gn", (2, 6, 4, 4), OpParams(groups=3), "float32", "large_mean", LAYER_EPS, seed=2)
    expected = reference(p)
    w = witness_errors(p, expected)
    for ulps in (0, 1, -1):
        for expanded in (False, True):
            variant = reference(p, np.float32, mean_ulps=ulps, expanded=expanded)
            for check, want in expected.items():
                err = float(np.abs(quantize(variant[check], "float32") - want).max())
                assert err <= w[check], (ulps, expanded, check)


# -- the tolerance rule's central claim -------------------------------------------------------


def _one_pass_forward(problem, dtype=np.float32):
    """A wrong float32 group norm: variance as E[x^2] - E[x]^2 (catastrophic cancellation)."""
    norm = OPS[problem.op].normalization(problem.shape, problem.params)
    v = problem.x.astype(dtype).reshape(norm.view)
    mean = v.mean(axis=norm.axes, keepdims=True, dtype=dtype)
    mean_sq = (v * v).mean(axis=norm.axes, keepdims=True, dtype=dtype)
    var = mean_sq - mean * mean
    with np.errstate(invalid="ignore"):
        y = (v - mean) / np.sqrt(var + dtype(problem.eps))
    y = y * problem.weight.astype(dtype).reshape(norm.param_view) + problem.bias.astype(dtype).reshape(norm.param_view)
    return quantize(y.reshape(problem.shape), problem.dtype)


GN_CASES = [((2, 6, 4, 4), 2), ((2, 8, 5), 4), ((3, 12, 3, 3), 3), ((2, 4, 6), 1)]


@pytest.mark.parametrize(("shape", "groups"), GN_CASES, ids=[f"{s}-G{g}" for s, g in GN_CASES])
@pytest.mark.parametrize("seed", [0, 1])
def test_one_pass_variance_fails_where_two_pass_passes(shape, groups, seed):
    problem = make_problem("gn", shape, OpParams(groups=groups), "float32", "large_mean", LAYER_EPS, seed=seed)
    expected = reference(problem)
    witness = witness_errors(problem, expected)
    tol = tolerance_for("float32", witness["forward"])
    assert tol.atol > tol.floor_atol  # the conditioning allowance is in play

    two_pass = quantize(reference(problem, np.float32)["forward"], "float32")
    good = compare(two_pass, expected["forward"], tol)
    assert good.mismatched == 0

    one_pass = _one_pass_forward(problem)
    bad = compare(one_pass, expected["forward"], tol)
    assert bad.mismatched > 0
    # not only NaNs from negative variances: finite outputs are wrong too
    finite = np.isfinite(one_pass)
    assert finite.any()
    excess = np.abs(one_pass[finite] - expected["forward"][finite]) - (
        tol.atol + tol.rtol * np.abs(expected["forward"][finite])
    )
    assert excess.max() > 0

    # and without the allowance even the correct two-pass computation would be rejected:
    # the table tolerance alone does not fit ill-conditioned data
    assert compare(two_pass, expected["forward"], tolerance_for("float32", 0.0)).mismatched > 0


@pytest.mark.parametrize("seed", [0, 1])
def test_one_pass_variance_passes_on_well_conditioned_data(seed):
    """The rule is about conditioning: on zero-mean data the one-pass formula is accurate enough."""
    problem = make_problem("gn", (2, 6, 4, 4), OpParams(groups=2), "float32", "normal", LAYER_EPS, seed=seed)
    expected = reference(problem)
    tol = tolerance_for("float32", witness_errors(problem, expected)["forward"])
    assert compare(_one_pass_forward(problem), expected["forward"], tol).mismatched == 0


@pytest.mark.parametrize("check", ["forward", "grad_input", "grad_weight", "grad_bias"])
def test_two_pass_witness_passes_every_check_on_large_mean(check):
    problem = make_problem("gn", (2, 6, 4, 4), OpParams(groups=3), "float32", "large_mean", LAYER_EPS, seed=3)
    expected = reference(problem)
    witness = witness_errors(problem, expected)
    for expanded in (False, True):
        got = quantize(reference(problem, np.float32, expanded=expanded)[check], "float32")
        assert compare(got, expected[check], tolerance_for("float32", witness[check])).mismatched == 0
