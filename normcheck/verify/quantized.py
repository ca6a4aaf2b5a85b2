"""verify's judge of a norm with FP8-quantized output (``--quantize``): the scale against the one
computed from the reference output, the FP8 values against the rounding of y / scale, one FP8
step allowed only within the tolerance of a rounding boundary (normcheck.ops.quantize).

The FP8 values are judged with the scale the implementation returned, where it is a usable one
(finite and positive): a kernel must quantize with the scale it reports, or its output
dequantizes wrong; whether that scale is right is the scale check's question. So a wrong scale
fails the scale check alone, and a wrong rounding, clamp or format the values check.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from normcheck.frameworks.base import RunOutput
from normcheck.ops import OPS, OpParams, fmt_shape
from normcheck.ops.quantize import (
    QUANTIZED_CHECK,
    SCALE_CHECK,
    SCALE_ROUNDINGS,
    STATIC,
    U32,
    Expected,
    Fp8Format,
    Quantization,
    as_scale,
    expectation,
    format_problem,
    representable,
    row_shape,
    scale_accepted,
    static_scale,
    steps,
    to_fp8,
    values_accepted,
)
from normcheck.problem import Problem
from normcheck.reference import reference
from normcheck.verify.records import ERROR, FAIL, PASS, SKIP, Case, CheckResult, Comparison, Tolerance
from normcheck.verify.tolerance import tolerance_for

# FP8-output kernels are inference kernels: no autograd passes through the rounding
NO_GRADIENTS = "FP8-quantized output is an inference kernel's: no gradient is checked"
GRADIENT_CHECKS = ("grad_input", "grad_weight", "grad_bias", "grad_residual")


def quantized_problem(plain: Problem, params: OpParams) -> Problem:
    """The inputs of ``plain`` (the same case unquantized) as the quantized case ``params``,
    with the static scale for a STATIC one (normcheck.ops.quantize.static_scale of the
    reference output)."""
    quant = params.quant
    if quant is None:
        raise ValueError("a quantized case needs params.quant")
    given = None
    if quant.scale == STATIC:
        given = static_scale(reference(plain)["forward"], quant.fmt)
        given.setflags(write=False)
    return replace(plain, params=params, quant_scale=given)


def expected_of(problem: Problem, y: np.ndarray, tol: Tolerance) -> Expected:
    """The expectation for ``problem`` whose reference output is ``y``, held to ``tol``."""
    quant = _quant(problem)
    axes = OPS[problem.op].normalization(problem.shape, problem.params).axes
    return expectation(y, axes, quant, tol.rtol, tol.atol, problem.quant_scale)


def scale_tolerance(exp: Expected, tol: Tolerance) -> Tolerance:
    """The scale's tolerance in the report's terms: y's divided by fp8_max, plus the scale's own
    float32 roundings (normcheck.ops.quantize.scale_bounds); 0 for a static scale, given exactly."""
    if exp.quant.scale == STATIC:
        return Tolerance(0.0, 0.0, 0.0, 0.0, "given")
    fp8_max = exp.quant.fmt.max
    return Tolerance(
        rtol=tol.rtol + SCALE_ROUNDINGS * U32,
        atol=tol.atol / fp8_max,
        floor_atol=tol.floor_atol / fp8_max,
        witness_err=tol.witness_err / fp8_max,
        source=tol.source,
    )


def _quant(problem: Problem) -> Quantization:
    if problem.params.quant is None:
        raise ValueError(f"{problem.op}: not a quantized case")
    return problem.params.quant


def judge_quantized(
    case: Case,
    problem: Problem,
    expected: dict[str, np.ndarray],
    witness_errs: dict[str, float],
    out: RunOutput,
    user_tolerance: tuple[float, float] | None,
    diagnose: bool = True,
) -> list[CheckResult]:
    """The rows of one quantized case: the scale, the FP8 values, and a skip row for each
    gradient the unquantized case would have (none is checked), diagnosed where they fail."""
    tol = tolerance_for(problem.dtype, witness_errs["forward"], user_tolerance)
    exp = expected_of(problem, expected["forward"], tol)
    got_scale = out.values.get(SCALE_CHECK)
    scale = None if got_scale is None else as_scale(got_scale, problem.shape, exp.axes)
    rows = [
        _scale_row(case, exp, scale_tolerance(exp, tol), got_scale, scale),
        _values_row(case, exp, tol, out.values.get(QUANTIZED_CHECK), out.dtypes.get(QUANTIZED_CHECK), scale),
    ]
    rows += [CheckResult(case, check, SKIP, message=NO_GRADIENTS) for check in GRADIENT_CHECKS if check in expected]
    if diagnose and any(r.status == FAIL for r in rows):
        from normcheck.diagnosis.quantized import diagnose_quantized

        found = diagnose_quantized(problem, exp, expected, out, scale, rows)
        rows = [replace(r, diagnosis=found.get(r.check)) if r.status == FAIL else r for r in rows]
    return rows


def usable_scale(exp: Expected, scale: np.ndarray | None) -> np.ndarray:
    """The scale the FP8 values are judged with: the returned one where it is finite and
    positive, else the expected one."""
    if scale is None:
        return exp.scale
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(scale) & (scale > 0), scale, exp.scale)


def _scale_row(
    case: Case, exp: Expected, tol: Tolerance, got: np.ndarray | None, scale: np.ndarray | None
) -> CheckResult:
    if got is None:
        if exp.quant.scale == STATIC:  # the function returned q alone: its scale is the one given
            return CheckResult(case, SCALE_CHECK, SKIP, message="no scale returned: the static scale given is q's")
        return CheckResult(case, SCALE_CHECK, ERROR, message="the implementation returned no scale")
    if scale is None:
        rows = int(np.prod(row_shape(np.shape(exp.y), exp.axes), dtype=np.int64))
        message = (
            f"returned a scale of shape {fmt_shape(np.shape(got)) or '()'}: expected one value for the tensor "
            f"or one per row ({rows} rows)"
        )
        return CheckResult(case, SCALE_CHECK, ERROR, message=message)
    want = np.broadcast_to(exp.scale, np.broadcast_shapes(exp.scale.shape, scale.shape))
    got_b = np.broadcast_to(scale, want.shape)
    ok = scale_accepted(got_b, np.broadcast_to(exp.lo, want.shape), np.broadcast_to(exp.hi, want.shape))
    cmp = _comparison(got_b, want, ~ok)
    if ok.all():
        return CheckResult(case, SCALE_CHECK, PASS, cmp, tol)
    idx = cmp.worst_index or ()
    what = "the static scale given" if exp.quant.scale == STATIC else f"amax / {exp.quant.fmt.max:g}"
    message = (
        f"{cmp.mismatched}/{cmp.numel} scales ({cmp.mismatched_pct:.3g}%) beyond tolerance; worst at {list(idx)}: "
        f"got {got_b[idx]:.9g}, expected {want[idx]:.9g} ({what})"
    )
    return CheckResult(case, SCALE_CHECK, FAIL, cmp, tol, message)


def _values_row(
    case: Case, exp: Expected, tol: Tolerance, q: np.ndarray | None, dtype: str | None, scale: np.ndarray | None
) -> CheckResult:
    if q is None:
        return CheckResult(case, QUANTIZED_CHECK, ERROR, message="the implementation returned no quantized output")
    if q.shape != exp.y.shape:
        message = f"returned shape {fmt_shape(q.shape) or '()'}, expected {fmt_shape(exp.y.shape)}"
        return CheckResult(case, QUANTIZED_CHECK, ERROR, message=message)
    fmt = exp.quant.fmt
    if dtype is None or not dtype.startswith(("float", "bfloat")):
        return CheckResult(case, QUANTIZED_CHECK, ERROR, message=f"returned {dtype} values: not floating point")
    wrong_format = format_problem(dtype, fmt)
    used = usable_scale(exp, scale)
    ok = values_accepted(q, exp.y, exp.y_err, used, exp.rounding, exact_format=dtype == fmt.dtype)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        v = exp.y / used
    want = to_fp8(v, exp.rounding)
    cmp = _comparison(q, want, ~ok)
    if ok.all() and wrong_format is None:
        return CheckResult(case, QUANTIZED_CHECK, PASS, cmp, tol)
    return CheckResult(case, QUANTIZED_CHECK, FAIL, cmp, tol, _values_message(cmp, q, want, v, fmt, wrong_format))


def _values_message(
    cmp: Comparison, q: np.ndarray, want: np.ndarray, v: np.ndarray, fmt: Fp8Format, wrong_format: str | None
) -> str:
    parts = [wrong_format] if wrong_format else []
    if cmp.mismatched and cmp.worst_index is not None:
        idx = cmp.worst_index
        off = ""
        if np.isfinite(q[idx]) and representable(q[idx], fmt):
            n = int(steps(q[idx], want[idx], fmt))
            off = f", {n} FP8 step{'' if n == 1 else 's'} off"
        parts.append(
            f"{cmp.mismatched}/{cmp.numel} elements ({cmp.mismatched_pct:.3g}%) are not the FP8 rounding of "
            f"y/scale (one step off is allowed only within the tolerance of a rounding boundary); worst at "
            f"{list(idx)}: got {q[idx]:.7g}, expected {want[idx]:.7g}, y/scale = {v[idx]:.7g}{off}"
        )
    nonfinite = int(np.count_nonzero(~np.isfinite(q) & np.isfinite(want)))
    if nonfinite:
        parts.append(f"{nonfinite} elements are NaN or inf where finite values are expected")
    foreign = int(np.count_nonzero(np.isfinite(q) & ~representable(q, fmt)))
    if foreign:
        parts.append(f"{foreign} values are not {fmt.dtype} values")
    return "; ".join(parts)


def _comparison(got: np.ndarray, want: np.ndarray, bad: np.ndarray) -> Comparison:
    """|got - want| in the report's terms; the worst element the largest error among the bad ones."""
    g = np.asarray(got, dtype=np.float64)
    w = np.asarray(want, dtype=np.float64)
    if not g.size:
        return Comparison(0.0, 0.0, 0, 0, None)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        diff = np.abs(g - w)
        diff = np.where(np.isnan(diff), np.inf, diff)
        rel = np.where(w != 0, diff / np.abs(w), np.where(diff == 0, 0.0, np.inf))
    flat = int(np.argmax(np.where(bad, diff, -1.0))) if bad.any() else int(np.argmax(diff))
    worst = tuple(int(i) for i in np.unravel_index(flat, g.shape))
    return Comparison(
        max_abs_err=float(diff.max()),
        max_rel_err=float(rel.max()),
        mismatched=int(bad.sum()),
        numel=int(g.size),
        worst_index=worst,
        worst_got=float(g[worst]),
        worst_expected=float(w[worst]),
    )
