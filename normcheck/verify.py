"""verify's engine: plan the case matrix, run it, return records. Never prints, never exits."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

import numpy as np

from normcheck.compare import compare, out_of_range, tolerance_for, witness_errors
from normcheck.conventions import Settings
from normcheck.crosscheck import Baseline, compare_frameworks
from normcheck.engine.deaths import escaped
from normcheck.frameworks.base import Framework, Implementation, RunOutput, Unsupported
from normcheck.inputs import KINDS, Problem, make_problem
from normcheck.ops import OPS, OpParams, fmt_shape, reference
from normcheck.records import ERROR, FAIL, KNOWN, PASS, RUN, SKIP, STATUSES, Case, CheckResult

T = TypeVar("T")


@dataclass(frozen=True)
class Options:
    ops: tuple[str, ...]
    dtypes: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...] = ()  # empty: each op's default grid
    groups: tuple[int, ...] = ()
    normalized_ndim: tuple[int, ...] = ()
    kinds: tuple[str, ...] = KINDS
    device: str = "cpu"
    seed: int = 0
    tolerance: tuple[float, float] | None = None  # (rtol, atol) given by the user
    eps: float | None = None  # given by the user; None: each framework's default
    momentum: float | None = None  # given by the user, in PyTorch's meaning
    against: Framework | None = None  # also compare every framework directly with this one
    explicit_dtypes: bool = False  # asked for by the user: an unsupported dtype is an error
    shard: tuple[int, int] | None = None  # (K, N): run slice K of N of the case matrix
    timeout: float | None = None  # seconds one case may take in a worker before it is an error
    diagnose: bool = True  # test the known-mistake hypotheses on every failing case


@dataclass
class Unit:
    """One set of inputs and every implementation that runs on it."""

    op: str
    shape: tuple[int, ...]
    params: OpParams
    dtype: str
    kind: str
    framework: Framework
    runs: list[tuple[Case, Implementation]] = field(default_factory=list)
    order: tuple[int, int] = (0, 0)  # (op, case) position in the plan: parts planned apart merge by it


def op_cases(op: str, opts: Options) -> list[tuple[tuple[int, ...], OpParams]]:
    """(shape, params) pairs to check for ``op``: the user's shapes or the default grid."""
    spec = OPS[op]
    if not opts.shapes:
        return spec.default_cases()
    cases = []
    for shape in opts.shapes:
        for params in spec.cases_for_shape(shape, list(opts.groups), list(opts.normalized_ndim)):
            cases.append((shape, params))
    return cases


def invalid_cases(opts: Options) -> list[str]:
    """One message per user shape that cannot be checked as asked."""
    problems = []
    for op in opts.ops:
        for shape, params in op_cases(op, opts):
            reason = OPS[op].validate(shape, params)
            if reason and (opts.groups or op != "gn" or "divisible" not in reason):
                problems.append(reason)
    return list(dict.fromkeys(problems))


def plan(opts: Options, frameworks: list[Framework]) -> list[Unit]:
    units: list[Unit] = []
    seen: dict[int, set] = {}
    for op_i, op in enumerate(opts.ops):
        for case_i, (shape, params) in enumerate(op_cases(op, opts)):
            if OPS[op].validate(shape, params):
                continue
            for fw in frameworks:
                fw_params = fw.case_params(op, params)
                if (fw_params, shape) in seen.setdefault(id(fw), set()):
                    continue
                seen[id(fw)].add((fw_params, shape))
                impls = fw.implementations(op)
                for dtype in opts.dtypes:
                    for kind in opts.kinds:
                        unit = Unit(op, shape, fw_params, dtype, kind, fw, order=(op_i, case_i))
                        for impl in impls:
                            for layout in impl.layouts(shape):
                                case = Case(op, fw.name, impl.name, shape, fw_params, dtype, kind, layout, opts.device)
                                unit.runs.append((case, impl))
                        units.append(unit)
    return shard(units, opts.shard) if opts.shard else units


def shard(units: list[Unit], spec: tuple[int, int]) -> list[Unit]:
    """Slice K of N (1-based) of the case matrix: every N-th case in plan order, starting at the
    K-th, so the slices are disjoint, cover every case and take about as long each."""
    return _every_nth(units, spec, "runs")


def shard_cases(units: list[T], spec: tuple[int, int]) -> list[T]:
    """``shard`` for the engine's planned units (their cases in ``cases``)."""
    return _every_nth(units, spec, "cases")


def _every_nth(units: list[T], spec: tuple[int, int], items: str) -> list[T]:
    k, n = spec
    index, kept = 0, []
    for unit in units:
        mine = []
        for item in getattr(unit, items):
            if index % n == k - 1:
                mine.append(item)
            index += 1
        if mine:
            kept.append(replace(unit, **{items: type(getattr(unit, items))(mine)}))  # type: ignore[type-var]
    return kept


def run(units: list[Unit], opts: Options, progress: Callable[[int], None] | None = None) -> Iterator[CheckResult]:
    """Check every planned case in this process, yielding records as they come. The engine
    (normcheck.engine) does the same with the cases run in worker processes, where it also owns
    the time limit; here nothing stops a case that hangs."""
    baselines: dict[tuple, Baseline | str] = {}
    for unit in units:
        problem = problem_for(unit, opts)
        truth = Truth.of(problem)
        for case, impl in unit.runs:
            if truth.unheld:
                yield CheckResult(case, RUN, SKIP, message=truth.unheld)
            else:
                outcome = run_case(case, impl, problem, opts)
                baseline = None
                if outcome.out is not None and opts.against is not None and unit.framework.name != opts.against.name:
                    key = (unit.op, unit.shape, unit.params, unit.dtype, unit.kind)
                    if key not in baselines:
                        baselines[key] = run_baseline(opts.against, problem, case.device, opts)
                    baseline = baselines[key]
                yield from judge_outcome(case, problem, truth, outcome, opts, unit.framework, baseline)
            if progress:
                progress(1)


@dataclass(frozen=True)
class Truth:
    """The reference outputs of one problem, and what judging against them needs."""

    expected: dict[str, np.ndarray]
    witness_errs: dict[str, float]
    unheld: str | None  # why no implementation in this dtype can be checked, or None

    @classmethod
    def of(cls, problem: Problem) -> Truth:
        expected = reference(problem)
        return cls(expected, witness_errors(problem, expected), unrepresentable_statistics(problem, expected))


@dataclass
class Outcome:
    """What running one case produced: its outputs, or the rows that say why there are none."""

    out: RunOutput | None
    rows: list[CheckResult]
    missing: dict[str, str] = field(default_factory=dict)  # checks it does not produce by design


class KnownIssues(Protocol):
    name: str

    def known_issue(self, case: Case, check: str) -> object | None: ...


def run_case(case: Case, impl: Implementation, problem: Problem, opts: Options) -> Outcome:
    """Run one case (framework and user code: this is what a worker does)."""
    out, rows = execute(case, impl, problem, opts)
    return Outcome(out, rows, impl.missing_checks(problem) if out is not None else {})


def judge_outcome(
    case: Case,
    problem: Problem,
    truth: Truth,
    outcome: Outcome,
    opts: Options,
    framework: KnownIssues,
    baseline: Baseline | str | None = None,
) -> list[CheckResult]:
    """Records for one case: every check against the reference, known defects marked, failures
    diagnosed, and (with --against) the direct comparison with the baseline's outputs."""
    out = outcome.out
    if out is None:
        return [mark_known(r, framework) for r in outcome.rows]
    rows = judge(case, problem, out, truth.expected, truth.witness_errs, opts, outcome.missing)
    rows = [mark_known(r, framework) for r in rows]
    if opts.diagnose:
        rows = with_diagnosis(rows, problem, truth.expected, out)
    if baseline is not None:
        direct = compare_frameworks(case, problem, out, baseline, truth.expected, truth.witness_errs, opts.tolerance)
        rows += [mark_known(r, framework) for r in direct]
    return rows


def aligned_settings(unit: Unit, opts: Options) -> Settings:
    """The unit's eps and momentum: the user's, else (with --against) the baseline framework's
    defaults, else its own framework's defaults; translated into the framework's meaning."""
    eps, momentum = opts.eps, opts.momentum
    if opts.against is not None:
        eps = opts.against.default_eps(unit.op, unit.dtype) if eps is None else eps
        momentum = opts.against.default_momentum(unit.op) if momentum is None else momentum
    return unit.framework.settings(unit.op, unit.dtype, eps, momentum)


def problem_for(unit: Unit, opts: Options) -> Problem:
    """The unit's inputs under its framework's conventions."""
    s = aligned_settings(unit, opts)
    return make_problem(
        unit.op,
        unit.shape,
        unit.params,
        unit.dtype,
        unit.kind,
        eps=s.eps,
        momentum=s.momentum,
        seed=opts.seed,
        unbiased_running_var=s.unbiased_running_var,
    )


def translations(units: list[Unit], opts: Options) -> list[str]:
    """How explicit (or aligned) eps and momentum were given to each framework, once each."""
    notes: dict[str, None] = {}
    for unit in units:
        for note in aligned_settings(unit, opts).notes:
            notes[note] = None
    return list(notes)


def unrepresentable_statistics(problem: Problem, expected: dict[str, np.ndarray]) -> str | None:
    """In evaluation mode the running statistics are inputs: if the dtype cannot hold them,
    no implementation in that dtype can be checked."""
    if not (problem.params.running_stats and problem.params.mode == "eval"):
        return None
    reason = out_of_range(expected["running_var"], problem.dtype)
    return f"running variance cannot be held: {reason}" if reason else None


def with_diagnosis(
    rows: list[CheckResult], problem: Problem, expected: dict[str, np.ndarray], out: RunOutput
) -> list[CheckResult]:
    """Failing rows get the known mistake that reproduces them (or "unknown")."""
    if not any(r.status == FAIL for r in rows):
        return rows
    from normcheck.diagnosis import diagnose

    found = diagnose(problem, expected, out, rows)
    return [replace(r, diagnosis=found.get(r.check)) if r.status == FAIL else r for r in rows]


def mark_known(result: CheckResult, framework: KnownIssues) -> CheckResult:
    if result.status != FAIL:
        return result
    issue = framework.known_issue(result.case, result.check)
    if issue is None:
        return result
    return replace(result, status=KNOWN, message=f"known defect: {issue.cause}. {result.message}")


def execute(
    case: Case, impl: Implementation, problem: Problem, opts: Options
) -> tuple[RunOutput | None, list[CheckResult]]:
    """Run one case: its outputs, or the row that says why there are none."""
    unsupported = impl.unsupported(problem, case.layout)
    if unsupported:
        return None, [CheckResult(case, RUN, SKIP, message=unsupported)]
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return impl.run(problem, case.layout, case.device), []
    except Unsupported as e:
        status = ERROR if opts.explicit_dtypes else SKIP
        return None, [CheckResult(case, RUN, status, message=f"{case.dtype} not supported: {e}")]
    except Exception as e:  # a failing implementation is a row, never a crash
        return None, [CheckResult(case, RUN, ERROR, message=describe_error(e))]
    except BaseException as e:  # sys.exit, KeyboardInterrupt, ... raised by the code: a row too
        from normcheck.engine import worker

        if isinstance(e, KeyboardInterrupt) and not worker.IN_WORKER:
            raise  # run in the caller's own process: this may be the caller's Ctrl-C
        return None, [CheckResult(case, RUN, ERROR, message=escaped(e))]


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
        rows if out is None else judge(case, problem, out, expected, witness_errs, opts, impl.missing_checks(problem))
    )


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


def judge(
    case: Case,
    problem: Problem,
    out: RunOutput,
    expected: dict[str, np.ndarray],
    witness_errs: dict[str, float],
    opts: Options,
    missing: dict[str, str],
) -> list[CheckResult]:
    return [
        check_one(
            case,
            check,
            out.values.get(check),
            out.dtypes.get(check),
            want,
            witness_errs[check],
            opts,
            missing.get(check),
        )
        for check, want in expected.items()
    ]


def check_one(
    case: Case,
    check: str,
    got: np.ndarray | None,
    got_dtype: str | None,
    want: np.ndarray,
    witness_err: float,
    opts: Options,
    missing: str | None = None,
) -> CheckResult:
    if missing is not None:
        return CheckResult(case, check, SKIP, message=missing)
    if got is None:
        return CheckResult(case, check, ERROR, message=f"the implementation returned no {check}")
    if got.shape != want.shape:
        message = f"returned shape {fmt_shape(got.shape) or '()'}, expected {fmt_shape(want.shape)}"
        return CheckResult(case, check, ERROR, message=message)
    if check in ("forward", "grad_input") and got_dtype != case.dtype:
        return CheckResult(case, check, ERROR, message=f"returned dtype {got_dtype} for {case.dtype} input")
    reason = out_of_range(want, case.dtype)
    if reason:
        return CheckResult(case, check, SKIP, message=reason)
    tol = tolerance_for(case.dtype, witness_err, opts.tolerance)
    cmp = compare(got, want, tol)
    if not cmp.mismatched:
        return CheckResult(case, check, PASS, cmp, tol)
    idx = cmp.worst_index
    message = (
        f"{cmp.mismatched}/{cmp.numel} elements ({cmp.mismatched_pct:.3g}%) beyond tolerance; "
        f"worst at {list(idx)}: got {got[idx]:.7g}, expected {want[idx]:.7g}"
    )
    nonfinite = int(np.count_nonzero(~np.isfinite(got) & np.isfinite(want)))
    if nonfinite:
        message += f"; {nonfinite} elements are NaN or inf where finite values are expected"
    return CheckResult(case, check, FAIL, cmp, tol, message)


def describe_error(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


def summarize(results: list[CheckResult]) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    for r in results:
        counts[r.status] += 1
    return counts
