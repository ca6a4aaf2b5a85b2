"""A reproducer's data: the case's inputs regenerated from its seed and settings, the float64
reference of the failing check, and the tolerance normcheck held it to, as the arrays of an .npz.
An FP8-quantized case's data is what verify judges it by (normcheck.verify.quantized): the
norm's reference output, the expected scale and the range a correct one lies in."""

from __future__ import annotations

import numpy as np

from normcheck.ops.adaptive_layer_norm import ADALN, stray_affine
from normcheck.problem import Problem
from normcheck.reference import reference
from normcheck.verify.quantized import expected_of
from normcheck.verify.records import Tolerance
from normcheck.verify.tolerance import tolerance_for, witness_errors


def case_arrays(problem: Problem) -> dict[str, np.ndarray]:
    """The inputs (float64 holding values exact in the case's dtype): x, dy, and those the case
    has of weight, bias, the initial running mean and variance, the training batches stacked as
    ``steps``, a fused add + norm's residual and dresidual, ws_gn's gn_weight and gn_bias, the
    static FP8 scale ``quant_scale``, and for adaLN ``stray_weight`` and ``stray_bias`` (what
    normcheck puts in a module's own (D,) weight and bias)."""
    arrays = {"x": problem.x, "dy": problem.dy}
    optional = {
        "weight": problem.weight,
        "bias": problem.bias,
        "running_mean": problem.running_mean,
        "running_var": problem.running_var,
        "residual": problem.residual,
        "dresidual": problem.dresidual,
        "gn_weight": problem.gn_weight,
        "gn_bias": problem.gn_bias,
        "quant_scale": problem.quant_scale,
    }
    arrays.update({name: a for name, a in optional.items() if a is not None})
    if problem.steps:
        arrays["steps"] = np.stack(problem.steps)
    if problem.op == ADALN:
        arrays["stray_weight"], arrays["stray_bias"] = stray_affine(problem.shape[-1], problem.dtype)
    return {name: np.array(a, dtype=np.float64) for name, a in arrays.items()}


def repro_arrays(
    problem: Problem, check: str, tolerance: Tolerance, user_tolerance: tuple[float, float] | None = None
) -> dict[str, np.ndarray]:
    """Everything the script reads: the inputs, ``expected`` (the reference of ``check``), and
    ``rtol``, ``atol`` and ``witness_err`` (the largest error of a correct implementation in the
    case's dtype on these inputs). An FP8-quantized case (either check, ``quantized`` or
    ``scale``) has ``quantized_arrays`` instead; ``user_tolerance`` is the run's --rtol/--atol."""
    if problem.params.quant is not None:
        return {**case_arrays(problem), **quantized_arrays(problem, user_tolerance)}
    return {
        **case_arrays(problem),
        "expected": np.asarray(reference(problem)[check], dtype=np.float64),
        "rtol": np.array(tolerance.rtol),
        "atol": np.array(tolerance.atol),
        "witness_err": np.array(tolerance.witness_err),
    }


def quantized_arrays(problem: Problem, user_tolerance: tuple[float, float] | None = None) -> dict[str, np.ndarray]:
    """What verify judges an FP8 case by, computed as it does (judge_quantized): ``expected``, the
    float64 reference of the norm's output y; ``rtol``, ``atol`` and ``witness_err``, y's tolerance
    (a correct kernel's y errs by at most atol + rtol * |y|); ``expected_scale`` and the range
    ``scale_lo`` .. ``scale_hi`` a correct scale lies in (one per row, or one for the tensor, with
    the normalized axes kept as size 1; a static scale exactly the one given)."""
    expected = reference(problem)
    tol = tolerance_for(problem.dtype, witness_errors(problem, expected)["forward"], user_tolerance)
    exp = expected_of(problem, expected["forward"], tol)
    return {
        "expected": np.asarray(exp.y, dtype=np.float64),
        "rtol": np.array(tol.rtol),
        "atol": np.array(tol.atol),
        "witness_err": np.array(tol.witness_err),
        "expected_scale": np.asarray(exp.scale, dtype=np.float64),
        "scale_lo": np.asarray(exp.lo, dtype=np.float64),
        "scale_hi": np.asarray(exp.hi, dtype=np.float64),
    }
