"""--against: every framework compared directly with a baseline framework on the same inputs,
under aligned conventions (the same eps and momentum, each translated into its own meaning)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from normcheck.frameworks.base import FrameworkFacts, RunOutput
from normcheck.problem import Problem
from normcheck.verify.records import FAIL, KNOWN, PASS, RUN, SKIP, Case, CheckResult, Tolerance
from normcheck.verify.tolerance import compare, tolerance_for


@dataclass(frozen=True)
class Baseline:
    """The baseline framework's outputs on one problem (its first implementation, native layout)."""

    framework: FrameworkFacts
    case: Case
    out: RunOutput
    missing: dict[str, str]

    @property
    def label(self) -> str:
        return f"{self.case.framework}:{self.case.impl}"


def pair_tolerance(tol: Tolerance) -> Tolerance:
    """Each side may be off the reference by up to ``tol`` in opposite directions."""
    return replace(tol, rtol=2 * tol.rtol, atol=2 * tol.atol, floor_atol=2 * tol.floor_atol)


def compare_frameworks(
    case: Case,
    problem: Problem,
    out: RunOutput,
    baseline: Baseline | str,
    expected: dict[str, np.ndarray],
    witness_errs: dict[str, float],
    user_tolerance: tuple[float, float] | None = None,
) -> Iterator[CheckResult]:
    """One record per check: ``out`` against the baseline's output for the same check."""
    if isinstance(baseline, str):
        yield CheckResult(case, RUN, SKIP, message=baseline, against="-")
        return
    row = lambda check, status, **kw: CheckResult(case, check, status, against=baseline.label, **kw)
    base_conv = baseline.framework.convention(problem.op)
    kinds = {True: "unbiased", False: "biased"}
    var_convention = None
    if case.params.running_stats and base_conv.unbiased_running_var != problem.unbiased_running_var:
        var_convention = (
            f"a convention difference, not a defect: {case.framework} tracks the "
            f"{kinds[problem.unbiased_running_var]} running variance, {baseline.framework.name} the "
            f"{kinds[base_conv.unbiased_running_var]} one (var_unbiased = var_biased * n / (n - 1))"
        )
    for check, want in expected.items():
        mine, theirs = out.values.get(check), baseline.out.values.get(check)
        if check in baseline.missing:
            yield row(check, SKIP, message=baseline.missing[check])
        elif mine is None or theirs is None:
            yield row(check, SKIP, message=f"{check} is not produced by both implementations")
        elif var_convention and check == "running_var":
            yield row(check, SKIP, message=var_convention)
        elif var_convention and case.params.mode == "eval" and check != "running_mean":
            yield row(check, SKIP, message=f"evaluation normalizes with the running variance; {var_convention}")
        elif mine.shape != theirs.shape:
            yield row(check, FAIL, message=f"shape {mine.shape} against {theirs.shape}")
        else:
            tol = pair_tolerance(tolerance_for(case.dtype, witness_errs[check], user_tolerance))
            cmp = compare(mine, theirs, tol)
            idx = cmp.worst_index
            if not cmp.mismatched or idx is None:  # idx is None only for an empty output, which cannot mismatch
                yield row(check, PASS, comparison=cmp, tolerance=tol)
                continue
            message = (
                f"{cmp.mismatched}/{cmp.numel} elements differ beyond tolerance; worst at {list(idx)}: "
                f"{mine[idx]:.7g} against {theirs[idx]:.7g} (reference {want[idx]:.7g})"
            )
            issue = baseline.framework.known_issue(baseline.case, check)
            if issue is not None:
                yield row(
                    check,
                    KNOWN,
                    comparison=cmp,
                    tolerance=tol,
                    message=f"known defect of the baseline: {issue.cause}. {message}",
                )
            else:
                yield row(check, FAIL, comparison=cmp, tolerance=tol, message=message)
