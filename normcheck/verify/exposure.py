"""Which cases expose which mistakes: every known mistake (normcheck.diagnosis's hypotheses)
simulated on a case, and judged as verify judges an implementation, against the reference with
the case's tolerance. The quick profile (normcheck.verify.quick_cases) is the smallest set of the
default grid's cases that exposes everything the grid exposes; this module is how it was chosen
(benchmarks/derive_quick_profile.py) and how its test proves it still does.

A mistake whose evidence is read back from an implementation's own output (one-pass variance,
the gradient's memory layout) cannot be simulated without one: those are checked on their buggy
fixtures instead.
"""

from __future__ import annotations

import numpy as np

from normcheck.diagnosis.hypotheses import DISTRIBUTED_ONLY, HYPOTHESES, Context
from normcheck.names import OpName
from normcheck.reference import reference
from normcheck.verify.inputs import make_problem
from normcheck.verify.quick_cases import QuickCase
from normcheck.verify.tolerance import compare, out_of_range, tolerance_for, witness_errors

# simulated with PyTorch's conventions: the defaults most user code copies
EPS, MOMENTUM = 1e-5, 0.1
NEEDS_AN_IMPLEMENTATION = ("one_pass_variance", "gradient_layout_ignored")
# tried on --world-size runs only, which the quick profile does not make
SKIPPED = (*NEEDS_AN_IMPLEMENTATION, *DISTRIBUTED_ONLY)


def exposure(op: OpName, case: QuickCase) -> dict[str, float]:
    """Each mistake the case exposes, with its margin: how many times the tolerance the
    simulated mistake's worst element lies from the reference (above 1 means it fails)."""
    problem = make_problem(op, case.shape, case.params, case.dtype, case.kind, eps=EPS, momentum=MOMENTUM)
    with np.errstate(all="ignore"):
        expected = reference(problem)
        witness = witness_errors(problem, expected)
    ctx = Context(problem, expected, expected)
    found: dict[str, float] = {}
    for hyp in HYPOTHESES:
        if hyp.id in SKIPPED:
            continue
        with np.errstate(all="ignore"):
            predictions = hyp.predict(ctx)
        for pred in predictions:
            margin = _margin(pred.values, expected, witness, case.dtype)
            if margin > 1.0:
                found[hyp.id] = max(found.get(hyp.id, 0.0), margin)
    return found


def _margin(values: dict[str, np.ndarray], expected: dict[str, np.ndarray], witness: dict[str, float], dtype) -> float:
    worst = 0.0
    for check, got in values.items():
        want = expected.get(check)
        if want is None or want.size == 0 or out_of_range(want, dtype):
            continue
        tol = tolerance_for(dtype, witness[check])
        if not compare(got, want, tol).mismatched:
            continue
        with np.errstate(all="ignore"):
            diff = np.abs(np.asarray(got, dtype=np.float64) - want)
            ratio = np.where(np.isnan(diff), np.inf, diff) / (tol.atol + tol.rtol * np.abs(want))
        worst = max(worst, float(np.max(ratio)))
    return worst
