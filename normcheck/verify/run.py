"""verify's run: one case of one implementation executed on its inputs (what a worker does).
Whatever the implementation raises becomes a row; nothing here judges the outputs."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace

import numpy as np

from normcheck.engine.deaths import escaped
from normcheck.frameworks.base import Framework, Implementation, RunOutput, Unsupported
from normcheck.names import IN_PLACE, Status
from normcheck.ops import fmt_shape
from normcheck.ops.extensions import needed_extensions
from normcheck.ops.fused_add import FUSED_ADD
from normcheck.ops.layer_norm import AXES
from normcheck.ops.quantize import QUANTIZED
from normcheck.ops.weight_standardization import WEIGHT_STANDARDIZATION
from normcheck.problem import Problem
from normcheck.verify.crosscheck import Baseline
from normcheck.verify.plan import Options
from normcheck.verify.records import ERROR, RUN, SKIP, Case, CheckResult
from normcheck.verify.stress_cases import STRESS


@dataclass
class Outcome:
    """What running one case produced: its outputs, or the rows that say why there are none."""

    out: RunOutput | None
    rows: list[CheckResult]
    missing: dict[str, str] = field(default_factory=dict)  # checks it does not produce by design


def run_case(case: Case, impl: Implementation, problem: Problem, opts: Options) -> Outcome:
    """Run one case (framework and user code: this is what a worker does)."""
    out, rows = execute(case, impl, problem, opts)
    return Outcome(out, rows, {**impl.missing_checks(problem), **out.skipped} if out is not None else {})


def execute(
    case: Case, impl: Implementation, problem: Problem, opts: Options
) -> tuple[RunOutput | None, list[CheckResult]]:
    """Run one case: its outputs, or the row that says why there are none."""
    unsupported = missing_extension(problem, impl, case.framework) or impl.unsupported(problem, case.layout)
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
        if opts.profile == STRESS and in_place_kernel(e, impl, case):
            return None, [CheckResult(case, RUN, SKIP, message=IN_PLACE_ONLY)]
        return None, [CheckResult(case, RUN, ERROR, message=describe_error(e))]
    except BaseException as e:  # sys.exit, KeyboardInterrupt, ... raised by the code: a row too
        from normcheck.engine import worker

        if isinstance(e, KeyboardInterrupt) and not worker.IN_WORKER:
            raise  # run in the caller's own process: this may be the caller's Ctrl-C
        return None, [CheckResult(case, RUN, ERROR, message=escaped(e))]


_EXTENSION_TITLES = {
    FUSED_ADD: "the fused residual add",
    QUANTIZED: "FP8-quantized output",
    WEIGHT_STANDARDIZATION: "Weight Standardization",
}


def missing_extension(problem: Problem, impl: Implementation, framework: str = "") -> str | None:
    """Why ``impl`` cannot run a case of an op variant, a fused op or layer norm over axes that are
    not the trailing ones (``Implementation.extensions``); ``framework`` "user": the user's own
    code, whose form has no way to be called on it."""
    if problem.params.axes is not None and AXES not in impl.extensions:
        axes = ",".join(map(str, problem.params.axes))
        return f"{impl.name} normalizes trailing axes only, not axes {axes} of {fmt_shape(problem.shape)}"
    lacking = [n for n in needed_extensions(problem.op, problem.params) if n not in impl.extensions]
    if not lacking:
        return None
    what = " and ".join(_EXTENSION_TITLES.get(n, f"the {n} variant") for n in lacking)
    if framework == "user":
        return f"{impl.name}: code of its form is not run on {what}"
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


# the stress profile's rows of an in-place kernel under autograd, which refuses its writes
IN_PLACE_ONLY = (
    "it writes into its input, which autograd refuses for a tensor that requires grad: an in-place kernel, "
    "checked in its in_place rows (forward only)"
)


def in_place_kernel(e: Exception, impl: Implementation, case: Case) -> bool:
    """Whether ``e`` is autograd refusing an implementation's write into its input, in a layout other
    than the in-place call it is also checked in (the stress profile's)."""
    refused = isinstance(e, RuntimeError) and "is being used in an in-place operation" in str(e)
    return refused and case.layout != IN_PLACE and IN_PLACE in impl.stress_layouts(case.shape)


def describe_error(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
