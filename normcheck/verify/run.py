"""verify's run: one case of one implementation executed on its inputs (what a worker does).
Whatever the implementation raises becomes a row; nothing here judges the outputs."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace

import numpy as np

from normcheck.engine.deaths import escaped
from normcheck.frameworks.base import Framework, Implementation, RunOutput, Unsupported
from normcheck.names import Status
from normcheck.ops import FUSED_BASE
from normcheck.ops.fused_add import FUSED_ADD
from normcheck.problem import Problem
from normcheck.verify.crosscheck import Baseline
from normcheck.verify.plan import Options
from normcheck.verify.records import ERROR, RUN, SKIP, Case, CheckResult


@dataclass
class Outcome:
    """What running one case produced: its outputs, or the rows that say why there are none."""

    out: RunOutput | None
    rows: list[CheckResult]
    missing: dict[str, str] = field(default_factory=dict)  # checks it does not produce by design


def run_case(case: Case, impl: Implementation, problem: Problem, opts: Options) -> Outcome:
    """Run one case (framework and user code: this is what a worker does)."""
    out, rows = execute(case, impl, problem, opts)
    return Outcome(out, rows, impl.missing_checks(problem) if out is not None else {})


def execute(
    case: Case, impl: Implementation, problem: Problem, opts: Options
) -> tuple[RunOutput | None, list[CheckResult]]:
    """Run one case: its outputs, or the row that says why there are none."""
    unsupported = missing_extension(problem, impl) or impl.unsupported(problem, case.layout)
    if unsupported:
        return None, [CheckResult(case, RUN, SKIP, message=unsupported)]
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return impl.run(problem, case.layout, case.device), []
    except Unsupported as e:
        status: Status = ERROR if opts.explicit_dtypes else SKIP
        return None, [CheckResult(case, RUN, status, message=f"{case.dtype} not supported: {e}")]
    except Exception as e:  # a failing implementation is a row, never a crash
        return None, [CheckResult(case, RUN, ERROR, message=describe_error(e))]
    except BaseException as e:  # sys.exit, KeyboardInterrupt, ... raised by the code: a row too
        from normcheck.engine import worker

        if isinstance(e, KeyboardInterrupt) and not worker.IN_WORKER:
            raise  # run in the caller's own process: this may be the caller's Ctrl-C
        return None, [CheckResult(case, RUN, ERROR, message=escaped(e))]


def missing_extension(problem: Problem, impl: Implementation) -> str | None:
    """Why ``impl`` cannot run a case of an op variant or a fused op (``Implementation.extensions``)."""
    needed = [problem.params.variant] if problem.params.variant is not None else []
    if problem.op in FUSED_BASE:
        needed.append(FUSED_ADD)
    lacking = [n for n in needed if n not in impl.extensions]
    if not lacking:
        return None
    what = " and ".join("the fused residual add" if n == FUSED_ADD else f"the {n} variant" for n in lacking)
    return f"{impl.name} has no form for {what}; check your own with --impl"


def run_baseline(framework: Framework, problem: Problem, device: str, opts: Options) -> Baseline | str:
    """The baseline's outputs (its first implementation, native layout), or why there are none."""
    impls = framework.implementations(problem.op)
    if not impls:
        return f"{framework.name} has no implementation of {problem.op}"
    impl = impls[0]
    case = Case(
        problem.op,
        framework.name,
        impl.name,
        problem.shape,
        problem.params,
        problem.dtype,
        problem.kind,
        impl.layouts(problem.shape)[0],
        device,
    )
    out, rows = execute(case, impl, problem, replace(opts, explicit_dtypes=False))
    if out is None:
        return f"{framework.name}:{impl.name}: {rows[0].message}"
    return Baseline(framework.facts(), case, out, impl.missing_checks(problem))


def describe_error(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
