"""Checking planned units in this process, one case after another: for tests and small
programmatic use. The engine (normcheck.engine) does the same with the cases run in worker
processes, where it also owns the time limit; here nothing stops a case that hangs."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from normcheck.frameworks.base import Implementation
from normcheck.problem import Problem
from normcheck.verify.crosscheck import Baseline
from normcheck.verify.judge import Truth, judge, judge_outcome
from normcheck.verify.plan import Options, Unit, problem_for
from normcheck.verify.records import RUN, SKIP, Case, CheckResult
from normcheck.verify.run import execute, run_baseline, run_case


def run(units: list[Unit], opts: Options, progress: Callable[[int], None] | None = None) -> Iterator[CheckResult]:
    """Check every planned case, yielding records as they come."""
    baselines: dict[tuple, Baseline | str] = {}
    for unit in units:
        if unit.skip is not None:
            yield from (CheckResult(case, RUN, SKIP, message=unit.skip) for case, _ in unit.runs)
            if progress:
                progress(len(unit.runs))
            continue
        problem = problem_for(unit, opts)
        truth = Truth.of(problem)
        for case, impl in unit.runs:
            yield from _check(unit, case, impl, problem, truth, opts, baselines)
            if progress:
                progress(1)


def _check(
    unit: Unit,
    case: Case,
    impl: Implementation,
    problem: Problem,
    truth: Truth,
    opts: Options,
    baselines: dict[tuple, Baseline | str],
) -> list[CheckResult]:
    if truth.unheld:
        return [CheckResult(case, RUN, SKIP, message=truth.unheld)]
    outcome = run_case(case, impl, problem, opts)
    baseline = None
    if outcome.out is not None and opts.against is not None and unit.framework.name != opts.against.name:
        key = (unit.op, unit.shape, unit.params, unit.dtype, unit.kind)
        if key not in baselines:
            baselines[key] = run_baseline(opts.against, problem, case.device, opts)
        baseline = baselines[key]
    return judge_outcome(case, problem, truth, outcome, opts, unit.framework, baseline)


def check_case(
    case: Case,
    impl: Implementation,
    problem: Problem,
    expected: dict[str, np.ndarray],
    witness_errs: dict[str, float],
    opts: Options,
) -> Iterator[CheckResult]:
    """Run one case and check every output against the reference."""
    out, rows = execute(case, impl, problem, opts)
    yield from (
        rows
        if out is None
        else judge(case, problem, out, expected, witness_errs, opts, {**impl.missing_checks(problem), **out.skipped})
    )
