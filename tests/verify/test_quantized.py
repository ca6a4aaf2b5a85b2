"""The judge of a quantized case (normcheck.verify.quantized) and its diagnosis
(normcheck.diagnosis.quantized), on outputs built here by a NumPy model of a kernel: correct ones
pass, each mistake fails with the diagnosis that names it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from normcheck.frameworks.base import RunOutput
from normcheck.ops import OPS, OpParams
from normcheck.ops.quantize import ROW, STATIC, TENSOR, Quantization, expectation
from normcheck.problem import Problem
from normcheck.verify.inputs import make_problem
from normcheck.verify.judge import Truth
from normcheck.verify.quantized import NO_GRADIENTS, judge_quantized
from normcheck.verify.records import ERROR, FAIL, PASS, SKIP, Case, CheckResult

SHAPE = (6, 16)


def problem(
    mode: str = ROW, fmt: str = "e4m3", dtype: str = "float32", kind: str = "normal", op: str = "rms"
) -> Problem:
    params = OpParams(normalized_ndim=1, quant=Quantization(fmt, mode))
    return make_problem(op, SHAPE, params, dtype, kind, eps=1e-5)


def kernel(
    p: Problem,
    fp8_max: float | None = None,
    amax_of: str = "y",
    per_row: bool | None = None,
    clamp: bool = True,
    eps_outside: bool = False,
    fp8: type = ml_dtypes.float8_e4m3fn,
) -> tuple[np.ndarray, np.ndarray]:
    """(q, scale) as a float32 kernel computes them, with the mistakes asked for."""
    quant = p.params.quant
    assert quant is not None
    x = p.x.astype(np.float32)
    ms = (x * x).mean(axis=-1, keepdims=True)
    rstd = np.float32(1) / (np.sqrt(ms) + np.float32(p.eps)) if eps_outside else 1 / np.sqrt(ms + np.float32(p.eps))
    y = x * rstd
    if p.weight is not None:
        y = y * p.weight.astype(np.float32)
    fp8_max = np.float32(fp8_max or quant.fmt.max)
    per_row = quant.scale == ROW if per_row is None else per_row
    source = np.abs(y if amax_of == "y" else x)
    amax = source.max(axis=-1, keepdims=True) if per_row else source.max(keepdims=True)
    if quant.scale == STATIC:
        scale = np.float32(p.quant_scale).reshape(1, 1)
    else:
        scale = np.maximum(amax / fp8_max, np.float32(1) / (fp8_max * np.float32(512)))
    v = y / scale
    if clamp:
        v = np.clip(v, -quant.fmt.max, quant.fmt.max)
    with np.errstate(invalid="ignore", over="ignore"):
        q = v.astype(fp8).astype(np.float64)
    return q, scale.astype(np.float64)


def judged(
    p: Problem, q: np.ndarray, scale: np.ndarray | None, q_dtype: str = "float8_e4m3fn"
) -> dict[str, CheckResult]:
    truth = Truth.of(p)
    out = RunOutput()
    out.add("quantized", q, q_dtype)
    if scale is not None:
        out.add("scale", scale, "float32")
    case = Case(p.op, "user", "kernel", p.shape, p.params, p.dtype, p.kind)
    rows = judge_quantized(case, p, truth.expected, truth.witness_errs, out, None)
    return {r.check: r for r in rows}


def causes(rows: dict[str, CheckResult]) -> dict[str, str | None]:
    return {c: r.diagnosis.hypothesis if r.diagnosis else None for c, r in rows.items() if r.status == FAIL}


@pytest.mark.parametrize("mode", [ROW, TENSOR, STATIC])
@pytest.mark.parametrize("kind", ["normal", "half_range", "tiny_scale", "constant"])
def test_a_correct_kernel_passes(mode, kind):
    p = problem(mode, kind=kind)
    rows = judged(p, *kernel(p))
    assert rows["quantized"].status == PASS and rows["scale"].status == PASS, [r.message for r in rows.values()]


def test_a_correct_layer_norm_kernel_in_e5m2_passes():
    p = problem(fmt="e5m2", op="ln")
    x = p.x.astype(np.float32)
    mean = x.mean(axis=-1, keepdims=True)
    y = (x - mean) / np.sqrt(((x - mean) ** 2).mean(axis=-1, keepdims=True) + np.float32(p.eps))
    y = y * p.weight.astype(np.float32) + p.bias.astype(np.float32)
    scale = np.abs(y).max(axis=-1, keepdims=True) / np.float32(57344)
    q = np.clip(y / scale, -57344, 57344).astype(ml_dtypes.float8_e5m2).astype(np.float64)
    rows = judged(p, q, scale.astype(np.float64), "float8_e5m2")
    assert rows["quantized"].status == PASS and rows["scale"].status == PASS


def test_gradients_are_skip_rows_saying_why():
    p = problem()
    rows = judged(p, *kernel(p))
    assert rows["grad_input"].status == SKIP and rows["grad_input"].message == NO_GRADIENTS
    assert "forward" not in rows


def test_q_as_float32_values_passes_when_they_are_fp8_values():
    p = problem()
    q, scale = kernel(p)
    assert judged(p, q, scale, "float32")["quantized"].status == PASS
    q[0, 0] = np.nextafter(np.float32(q[0, 0]), np.float32(np.inf))  # no e4m3 value
    row = judged(p, q, scale, "float32")["quantized"]
    assert row.status == FAIL and "1 values are not float8_e4m3fn values" in row.message


def test_one_step_off_away_from_a_boundary_fails():
    p = problem()
    q, scale = kernel(p)
    # the amax element of a row: y / scale is 448 to a few float32 roundings, far from 432 and 464
    i = np.unravel_index(np.argmax(np.abs(q) == 448.0), q.shape)
    q[i] = 416.0 * np.sign(q[i])
    row = judged(p, q, scale)["quantized"]
    assert row.status == FAIL and "1/96 elements" in row.message and "1 FP8 step off" in row.message


def test_wrong_fp8_max_in_the_scale_is_named():
    p = problem()
    rows = judged(p, *kernel(p, fp8_max=240.0))
    assert rows["scale"].status == FAIL and rows["quantized"].status == PASS  # q is right for its own scale
    assert causes(rows) == {"scale": "fp8_max_240"}
    assert not rows["scale"].diagnosis.ambiguous and rows["scale"].diagnosis.fix


def test_e4m3fnuz_values_are_named():
    p = problem()
    q, scale = kernel(p, fp8_max=240.0, fp8=ml_dtypes.float8_e4m3fnuz)
    rows = judged(p, q, scale, "float8_e4m3fnuz")
    assert "returned float8_e4m3fnuz, not float8_e4m3fn" in rows["quantized"].message
    assert causes(rows) == {"scale": "format_e4m3fnuz", "quantized": "format_e4m3fnuz"}


def test_a_tensor_scale_where_rows_are_claimed_is_named():
    p = problem(ROW)
    rows = judged(p, *kernel(p, per_row=False))
    assert causes(rows) == {"scale": "tensor_scale"}


def test_row_scales_where_a_tensor_scale_is_claimed_are_named():
    p = problem(TENSOR)
    rows = judged(p, *kernel(p, per_row=True))
    assert causes(rows) == {"scale": "row_scale"}


def test_the_amax_of_the_input_is_named():
    p = problem()
    assert causes(judged(p, *kernel(p, amax_of="x"))) == {"scale": "amax_of_input"}


def test_no_saturation_clamp_is_named_in_e5m2():
    p = problem(STATIC, fmt="e5m2")
    q, scale = kernel(p, clamp=False, fp8=ml_dtypes.float8_e5m2)
    rows = judged(p, q, scale, "float8_e5m2")
    assert np.isinf(q).any()  # the static scale makes the largest values overflow
    assert causes(rows) == {"quantized": "no_saturation"}
    assert "NaN or inf where finite values are expected" in rows["quantized"].message


def test_a_static_scale_one_ulp_off_is_named():
    p = problem(STATIC)
    q, scale = kernel(p)
    off = np.nextafter(scale.astype(np.float32), np.float32(1.0)).astype(np.float64)
    rows = judged(p, q, off)
    assert rows["quantized"].status == PASS
    assert causes(rows) == {"scale": "scale_one_ulp"}


def test_a_dynamic_scale_one_ulp_off_passes():
    # a float32 ulp is below what a correct kernel's y can be trusted to in float32: not a failure
    p = problem()
    q, scale = kernel(p)
    rows = judged(p, q, np.nextafter(scale.astype(np.float32), np.float32(1.0)).astype(np.float64))
    assert rows["scale"].status == PASS


def test_a_mistake_of_the_norm_itself_is_named():
    p = problem(kind="tiny_scale")  # the spread is sqrt(eps): eps outside the root changes y by 40%
    rows = judged(p, *kernel(p, eps_outside=True))
    assert set(causes(rows).values()) == {"eps_outside_sqrt"}


def test_an_unknown_mistake_is_unknown():
    p = problem()
    q, scale = kernel(p)
    rows = judged(p, -q, scale)  # sign flipped: no known mistake does that
    assert causes(rows) == {"quantized": None}
    assert rows["quantized"].diagnosis.cause == "unknown"


def test_a_scale_of_another_size_is_an_error_row():
    p = problem()
    q, _ = kernel(p)
    rows = judged(p, q, np.ones(5))
    assert rows["scale"].status == ERROR and "expected one value for the tensor or one per row (6 rows)" in (
        rows["scale"].message
    )


def test_integer_values_are_an_error_row():
    p = problem()
    q, scale = kernel(p)
    assert judged(p, q, scale, "int8")["quantized"].status == ERROR


def test_q_alone_with_a_static_scale_skips_the_scale():
    p = problem(STATIC)
    q, _ = kernel(p)
    rows = judged(p, q, None)
    assert rows["scale"].status == SKIP and rows["quantized"].status == PASS


def test_the_quantized_case_has_the_inputs_of_the_plain_case():
    p = problem(STATIC)
    plain = make_problem("rms", SHAPE, OpParams(normalized_ndim=1), "float32", "normal", eps=1e-5)
    np.testing.assert_array_equal(p.x, plain.x)
    assert p.quant_scale is not None and p.quant_scale.shape == ()
    assert OPS["rms"].normalization(SHAPE, replace(p.params, quant=None)).axes == (1,)


def test_a_gemma_case_quantizes_gemmas_output():
    params = OpParams(normalized_ndim=1, variant="gemma", quant=Quantization("e4m3", ROW))
    p = make_problem("rms", SHAPE, params, "float32", "normal", eps=1e-5)
    gemma_scale = 1.0 + p.weight
    plain = replace(p, params=replace(params, variant=None), weight=gemma_scale)
    q, scale = kernel(plain)  # RMS norm with weight 1 + w is Gemma's
    rows = judged(p, q, scale)
    assert rows["quantized"].status == PASS and rows["scale"].status == PASS
    rows = judged(p, *kernel(p))  # the offset missing: the weight used as it is
    assert rows["scale"].status == FAIL and causes(rows)["scale"] == "gemma_offset_missing"


def test_the_docs_name_every_mistake():
    from normcheck.diagnosis.quantized import _guesses

    docs = (Path(__file__).resolve().parents[2] / "docs" / "quantized.md").read_text()
    ids = set()
    for fmt in ("e4m3", "e5m2"):
        for mode in (ROW, TENSOR, STATIC):
            p = problem(mode, fmt=fmt)
            truth = Truth.of(p)
            exp = expectation(truth.expected["forward"], (1,), p.params.quant, 1e-6, 1e-5, p.quant_scale)
            ids |= {g.id for g in _guesses(p, exp, exp.scale)}
    assert ids and not [i for i in sorted(ids) if f"`{i}`" not in docs]
