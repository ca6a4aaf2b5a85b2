"""Op variants and fused ops in the diagnosis: the known mistakes of the plain ops are tested on
the plain op the case reduces to, and their predictions carried back to the case.

Gemma's RMS norm is RMS norm with weight 1 + w (its weight gradient is the scale's); layer norm
without bias is layer norm with bias None; a fused add + norm normalizes h = x + residual
(rounded to the input dtype) and adds the residual output's upstream gradient to the input's,
which is also the residual's. So a mistake in the norm of such a case is the plain op's mistake
on the plain case, plus the parts the variant adds, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from normcheck.ops import FUSED_BASE
from normcheck.ops.adaptive_layer_norm import ADALN, PREMODULATED
from normcheck.ops.batch_norm import CUMULATIVE
from normcheck.problem import Problem
from normcheck.reference import normalized_input, scale

FUSED_CHECKS = ("residual_out", "grad_residual")


@dataclass(frozen=True)
class Plain:
    """A variant or fused case as its plain op: the problem, the reference's and the
    implementation's outputs in the plain op's terms, and the way back."""

    problem: Problem
    expected: dict[str, np.ndarray]
    got: dict[str, np.ndarray]
    dresidual: np.ndarray | None  # a fused case's residual-output gradient, added back to grad_input

    def lift(self, values: dict[str, np.ndarray] | None) -> dict[str, np.ndarray] | None:
        """Plain-op outputs as the case's: grad_input gets dresidual back, grad_residual equals it."""
        if values is None or self.dresidual is None or "grad_input" not in values:
            return values
        dx = values["grad_input"] + self.dresidual
        return {**values, "grad_input": dx, "grad_residual": dx}

    def lift_only(self, only: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if only is None or self.dresidual is None or "grad_input" not in only:
            return only
        return (*only, "grad_residual")


def plain(problem: Problem, expected: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> Plain | None:
    """The plain op the case reduces to, or None for a case of a plain op."""
    if problem.params.variant in (None, CUMULATIVE) and problem.op not in FUSED_BASE and problem.op != ADALN:
        return None  # batch norm's momentum=None: the reference itself applies it, so does every rerun
    # adaLN: layer norm with the per-sample weight 1 + scale, already added (PREMODULATED)
    params = replace(problem.params, variant=PREMODULATED if problem.op == ADALN else None)
    reduced = replace(problem, params=params, weight=scale(problem))
    if problem.op not in FUSED_BASE:
        return Plain(reduced, expected, got, None)
    dres = np.asarray(problem.fused_inputs()[1], dtype=np.float64)
    reduced = replace(reduced, op=FUSED_BASE[problem.op], x=normalized_input(problem), residual=None, dresidual=None)
    return Plain(reduced, _unfused(expected, dres), _unfused(got, dres), dres)


def _unfused(values: dict[str, np.ndarray], dres: np.ndarray) -> dict[str, np.ndarray]:
    out = {k: v for k, v in values.items() if k not in FUSED_CHECKS}
    if "grad_input" in out and np.shape(out["grad_input"]) == dres.shape:
        out["grad_input"] = out["grad_input"] - dres
    return out
