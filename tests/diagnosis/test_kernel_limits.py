"""The diagnosis at the stress profile's sizes: the kernel-limit mistakes (a row index wrapping at
2^16, statistics over part of a long row) in closed form, named on hand-made outputs and tried
nowhere else; the half-precision weight-gradient accumulation; the long sequential sums and the
size past which a case is not diagnosed."""

from __future__ import annotations

import numpy as np
import pytest

from normcheck.diagnosis import diagnose
from normcheck.diagnosis.hypotheses import HYPOTHESES
from normcheck.diagnosis.kernel_limits import ROW_INDEX_LIMIT, limited_outputs, partial_row, row_index_wraps
from normcheck.diagnosis.precision import EXACT_SEQUENTIAL_TERMS, _sequential_sum
from normcheck.dtypes import quantize
from normcheck.frameworks.base import RunOutput
from normcheck.ops import OpParams
from normcheck.reference import reference
from normcheck.verify.inputs import make_problem
from normcheck.verify.judge import DIAGNOSIS_MAX_NUMEL, judge, with_diagnosis
from normcheck.verify.plan import Options
from normcheck.verify.records import FAIL, Case
from normcheck.verify.tolerance import witness_errors

BY_ID = {h.id: h for h in HYPOTHESES}
LAST = OpParams(normalized_ndim=1)


def _problem(op, shape, dtype="float32", params=LAST):
    return make_problem(op, shape, params, dtype, "normal", eps=1e-5)


def _diagnosed(p, got):
    expected = reference(p)
    out = RunOutput()
    for check, value in got.items():
        out.add(check, value, p.dtype)
    case = Case(p.op, "hand", "buggy", p.shape, p.params, p.dtype, p.kind)
    rows = judge(case, p, out, expected, witness_errors(p, expected), Options(ops=(p.op,), dtypes=(p.dtype,)), {})
    return rows, diagnose(p, expected, out, rows)


@pytest.mark.parametrize("op", ["ln", "rms"])
def test_without_the_mistake_the_closed_form_is_the_reference(op):
    p = _problem(op, (5, 7), "float64", OpParams(normalized_ndim=1))
    got = limited_outputs(p, np.arange(5), 7, np.float64)
    for check, want in reference(p).items():
        np.testing.assert_allclose(got[check], want, rtol=1e-12, atol=1e-12, err_msg=check)


@pytest.mark.parametrize("op", ["ln", "rms"])
def test_the_closed_form_gradient_is_the_derivative_of_its_forward(op):
    """Central differences of sum(y * dy) against grad_input, with rows read from other rows'
    statistics and over part of the row."""
    p = _problem(op, (6, 5), "float64", OpParams(normalized_ndim=1))
    src, block = np.array([0, 1, 2, 0, 1, 2]), 3
    got = limited_outputs(p, src, block, np.float64)
    x = np.array(p.x)
    numeric = np.zeros_like(x)
    h = 1e-6
    for i in np.ndindex(x.shape):
        for sign in (1, -1):
            shifted = x.copy()
            shifted[i] += sign * h
            moved = limited_outputs(_with_x(p, shifted), src, block, np.float64)
            numeric[i] += sign * float(np.sum(moved["forward"] * p.dy)) / (2 * h)
    np.testing.assert_allclose(got["grad_input"], numeric, rtol=1e-6, atol=1e-7)


def _with_x(p, x):
    from dataclasses import replace

    return replace(p, x=x)


def test_the_row_index_wrap_is_tried_past_two_to_the_sixteen_rows_only():
    assert row_index_wraps(_problem("ln", (ROW_INDEX_LIMIT, 2))) == []
    (found,) = row_index_wraps(_problem("ln", (ROW_INDEX_LIMIT + 2, 2)))
    want = reference(_problem("ln", (ROW_INDEX_LIMIT + 2, 2)))["forward"]
    differs = np.flatnonzero(np.any(np.abs(found.values["forward"] - want) > 1e-5, axis=1))
    assert set(differs) == {ROW_INDEX_LIMIT, ROW_INDEX_LIMIT + 1}


def test_the_partial_row_is_tried_on_rows_of_1024_values_or_more_that_are_no_power_of_two():
    assert partial_row(_problem("rms", (2, 1000))) == []
    assert partial_row(_problem("rms", (2, 4096))) == []
    titles = [f.title for f in partial_row(_problem("rms", (2, 4095)))]
    blocks = sorted(int(t.split()[4]) for t in titles)
    assert blocks == [2048, 4088, 4092, 4094]
    assert [f.title for f in partial_row(_problem("rms", (2, 5120)))] == [
        "statistics over the first 4096 of the row's 5120 values: the largest power of two in the row "
        "(a tree reduction's block)"
    ]


def test_a_wrapped_row_index_is_named():
    p = _problem("ln", (ROW_INDEX_LIMIT + 3, 4))
    got = limited_outputs(p, np.arange(p.shape[0]) % ROW_INDEX_LIMIT, 4, np.float64)
    rows, found = _diagnosed(p, got)
    failing = {r.check for r in rows if r.status == FAIL}
    assert {"forward", "grad_input"} <= failing
    assert {d.hypothesis for d in found.values()} == {"row_index_wraps"}
    assert all(d.scope == "case" and "wraps at 65536" in d.cause for d in found.values())


@pytest.mark.parametrize(("op", "hidden", "block"), [("rms", 4095, 2048), ("ln", 5120, 4096), ("rms", 4097, 4096)])
def test_a_reduction_over_part_of_the_row_is_named_with_its_block(op, hidden, block):
    p = _problem(op, (4, hidden))
    got = limited_outputs(p, np.arange(4), block, np.float64)
    rows, found = _diagnosed(p, got)
    assert {r.check for r in rows if r.status == FAIL} >= {"forward", "grad_input"}
    assert {d.hypothesis for d in found.values()} == {"partial_row_reduction"}
    assert all(f"first {block} of the row's {hidden} values" in d.cause for d in found.values())


def test_half_weight_gradient_accumulation_is_tried_past_1024_summed_values_only():
    from normcheck.diagnosis.hypotheses import Context

    def predictions(shape, dtype):
        p = _problem("ln", shape, dtype)
        expected = reference(p)
        return BY_ID["half_param_accumulation"].predict(Context(p, expected, expected))

    assert predictions((1024, 4), "bfloat16") == []
    assert predictions((1025, 4), "float32") == []
    assert predictions((1025, 4), "bfloat16")


def test_long_sequential_sums_accumulate_in_the_dtype_and_short_ones_stay_exact():
    rng = np.random.default_rng(0)
    short = rng.standard_normal((3, EXACT_SEQUENTIAL_TERMS))
    loop = np.zeros(3)
    for i in range(short.shape[1]):
        loop = quantize(loop + short[:, i], "bfloat16")
    np.testing.assert_array_equal(_sequential_sum(short, (1,), "bfloat16").ravel(), loop)
    long = quantize(rng.standard_normal((64, 8192)), "bfloat16")  # terms already in the dtype
    exact = long.sum(axis=1)
    for dtype in ("bfloat16", "float16"):
        fast = _sequential_sum(long, (1,), dtype).ravel()
        slow = np.zeros(64)
        for i in range(long.shape[1]):
            slow = quantize(slow + long[:, i], dtype)
        ratio = np.abs(fast - exact).mean() / np.abs(slow - exact).mean()
        assert 0.8 < ratio < 1.25, (dtype, ratio)  # the same error, in size
        assert np.abs(fast - exact).mean() > 10 * np.abs(quantize(exact, dtype) - exact).mean()  # not a plain sum


def test_a_case_past_the_size_limit_is_not_diagnosed_and_says_so():
    p = _problem("rms", (DIAGNOSIS_MAX_NUMEL // 4 + 1, 4))
    expected = reference(p)
    out = RunOutput()
    for check, value in expected.items():
        out.add(check, value * 1.01, p.dtype)
    case = Case(p.op, "hand", "buggy", p.shape, p.params, p.dtype, p.kind)
    rows = judge(case, p, out, expected, witness_errors(p, expected), Options(ops=("rms",), dtypes=("float32",)), {})
    assert any(r.status == FAIL for r in rows)
    for r in with_diagnosis(rows, p, expected, out):
        if r.status == FAIL:
            assert r.diagnosis is not None and r.diagnosis.hypothesis is None
            assert r.diagnosis.evidence.startswith(f"diagnosis skipped: case too large ({p.x.size} elements")
