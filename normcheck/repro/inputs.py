"""A reproducer's data: the case's inputs regenerated from its seed and settings, the float64
reference of the failing check, and the tolerance normcheck held it to, as the arrays of an .npz."""

from __future__ import annotations

import numpy as np

from normcheck.problem import Problem
from normcheck.reference import reference
from normcheck.verify.records import Tolerance


def case_arrays(problem: Problem) -> dict[str, np.ndarray]:
    """The inputs (float64 holding values exact in the case's dtype): x, dy, and those the case
    has of weight, bias, the initial running mean and variance, and the training batches
    stacked as ``steps``."""
    arrays = {"x": problem.x, "dy": problem.dy}
    optional = {
        "weight": problem.weight,
        "bias": problem.bias,
        "running_mean": problem.running_mean,
        "running_var": problem.running_var,
    }
    arrays.update({name: a for name, a in optional.items() if a is not None})
    if problem.steps:
        arrays["steps"] = np.stack(problem.steps)
    return {name: np.array(a, dtype=np.float64) for name, a in arrays.items()}


def repro_arrays(problem: Problem, check: str, tolerance: Tolerance) -> dict[str, np.ndarray]:
    """Everything the script reads: the inputs, ``expected`` (the reference of ``check``), and
    ``rtol``, ``atol`` and ``witness_err`` (the largest error of a correct implementation in the
    case's dtype on these inputs)."""
    return {
        **case_arrays(problem),
        "expected": np.asarray(reference(problem)[check], dtype=np.float64),
        "rtol": np.array(tolerance.rtol),
        "atol": np.array(tolerance.atol),
        "witness_err": np.array(tolerance.witness_err),
    }
