"""verify's judge: a case's outputs against the float64 reference, with a tolerance tied to
what a correct implementation in the same dtype achieves; known defects marked, failures
diagnosed, and (with --against) the direct comparison with a baseline framework."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from normcheck.frameworks.base import KnownIssue, RunOutput
from normcheck.ops import fmt_shape
from normcheck.problem import Problem
from normcheck.reference import reference
from normcheck.verify.crosscheck import Baseline, compare_frameworks
from normcheck.verify.memory_format import memory_format_rows
from normcheck.verify.plan import Options
from normcheck.verify.records import ERROR, FAIL, KNOWN, PASS, SKIP, Case, CheckResult, Diagnosis
from normcheck.verify.run import Outcome
from normcheck.verify.stress_cases import STRESS
from normcheck.verify.tolerance import compare, out_of_range, tolerance_for, witness_errors


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


class KnownIssues(Protocol):
    """What judging needs of a framework: a Framework, or the FrameworkFacts sent in its place."""

    @property
    def name(self) -> str: ...

    def known_issue(self, case: Case, check: str) -> KnownIssue | None: ...

    def known_issues_for(self, case: Case, check: str) -> tuple[KnownIssue, ...]: ...


def judge_outcome(
    case: Case,
    problem: Problem,
    truth: Truth,
    outcome: Outcome,
    opts: Options,
    framework: KnownIssues,
    baseline: Baseline | str | None = None,
) -> list[CheckResult]:
    """Records for one case: every check against the reference, failures diagnosed, documented
    defects marked known where their hypothesis reproduces them, and (with --against) the
    direct comparison with the baseline's outputs; with --policy, the forward's parity row."""
    out = outcome.out
    if out is None:
        return outcome.rows
    if problem.params.quant is not None:  # FP8 values and their scale (normcheck.verify.quantized)
        from normcheck.verify.quantized import judge_quantized

        return judge_quantized(case, problem, truth.expected, truth.witness_errs, out, opts.tolerance, opts.diagnose)
    rows = judge(case, problem, out, truth.expected, truth.witness_errs, opts, outcome.missing)
    if opts.diagnose:
        rows = with_diagnosis(rows, problem, truth.expected, out, distributed=bool(opts.world_sizes))
    rows = confirm_known(rows, problem, truth.expected, out, framework)
    form = getattr(framework, "form", None)  # user code's form: its id (FrameworkFacts) or the Form itself
    if form is not None:  # user code: where its failure is its framework's own documented defect
        rows = inherited_notes(rows, getattr(form, "id", form))
    if opts.profile == STRESS:  # channels_last in, channels_last out: a row of its own
        rows += memory_format_rows(case, out, framework)
    if baseline is not None:
        direct = compare_frameworks(case, problem, out, baseline, truth.expected, truth.witness_errs, opts.tolerance)
        known = {r.check: r for r in rows if r.status == KNOWN}
        rows += [_known_as(r, known.get(r.check)) for r in direct]
    if opts.policy is not None:  # ulp-level parity with a named precision policy
        from normcheck.verify.policy import policy_rows

        forward = next((r for r in rows if r.check == "forward" and r.status == KNOWN), None)
        documented = framework.known_issues_for(case, "forward")
        rows += [_known_by(r, forward, documented) for r in policy_rows(case, problem, out, opts.policy)]
    return rows


def _known_by(row: CheckResult, forward: CheckResult | None, documented: tuple[KnownIssue, ...]) -> CheckResult:
    """A policy's parity row is known when the forward row it restates is a known defect; where
    the forward passed the reference's tolerance (half precision hides a defect there) but the
    implementation has a documented forward defect, known and said to be unconfirmed."""
    if row.status != FAIL:
        return row
    if forward is not None:
        cause = forward.message.split(". ", 1)[0]
        return replace(row, status=KNOWN, message=f"{cause}. {row.message}", diagnosis=forward.diagnosis)
    why = "the forward row is within the reference's tolerance; the policy's ulp band is not"
    return _unconfirmed(row, documented, why)


def unrepresentable_statistics(problem: Problem, expected: dict[str, np.ndarray]) -> str | None:
    """In evaluation mode the running statistics are inputs: if the dtype cannot hold them,
    no implementation in that dtype can be checked."""
    if not (problem.params.running_stats and problem.params.mode == "eval"):
        return None
    reason = out_of_range(expected["running_var"], problem.dtype)
    return f"running variance cannot be held: {reason}" if reason else None


# The diagnosis re-runs the reference under every known mistake, some of them in several orders of
# operations: on 2^20 elements about 15 s on two cores, growing with the size (2^21: 33 s). Past
# this a case's failing rows say so instead (the stress profile's largest CUDA cases).
DIAGNOSIS_MAX_NUMEL = 2**20


def too_large(problem: Problem) -> str:
    return (
        f"diagnosis skipped: case too large ({problem.x.size} elements, more than {DIAGNOSIS_MAX_NUMEL}); "
        "check a smaller shape with the same failure to have it diagnosed"
    )


def _unconfirmed(r: CheckResult, candidates: tuple[KnownIssue, ...], why: str) -> CheckResult:
    if not candidates or not _plausibly(r):
        return r
    note = f"known defect (unconfirmed: {why.removeprefix('diagnosis skipped: ')}): {candidates[0].cause}. "
    return replace(r, status=KNOWN, message=note + r.message)


def with_diagnosis(
    rows: list[CheckResult],
    problem: Problem,
    expected: dict[str, np.ndarray],
    out: RunOutput,
    distributed: bool = False,
) -> list[CheckResult]:
    """Failing rows get the known mistake that reproduces them (or "unknown"); ``distributed``:
    the case ran over several processes, so the mistakes only such code makes are tried too."""
    if not any(r.status == FAIL for r in rows):
        return rows
    if problem.x.size > DIAGNOSIS_MAX_NUMEL:
        skipped = Diagnosis(None, "unknown", too_large(problem))
        return [replace(r, diagnosis=skipped) if r.status == FAIL else r for r in rows]
    from normcheck.diagnosis import HYPOTHESES, diagnose

    every = [h.id for h in HYPOTHESES] if distributed else None
    found = diagnose(problem, expected, out, rows, hypotheses=every)
    return [replace(r, diagnosis=found.get(r.check)) if r.status == FAIL else r for r in rows]


def confirm_known(
    rows: list[CheckResult], problem: Problem, expected: dict[str, np.ndarray], out: RunOutput, framework: KnownIssues
) -> list[CheckResult]:
    """Failing rows that a documented defect's fingerprint matches become known when the
    defect's hypothesis, re-run on the case, reproduces them (element by element, or for a
    numeric defect's rounding noise, in size); they carry that evidence. A row the fingerprint
    matches but no hypothesis reproduces stays a failure and says so."""
    candidates = {r.check: framework.known_issues_for(r.case, r.check) for r in rows if r.status == FAIL}
    if not any(candidates.values()):
        return rows
    if problem.x.size > DIAGNOSIS_MAX_NUMEL:  # known by its fingerprint alone, and said to be unconfirmed
        return [_unconfirmed(r, candidates.get(r.check, ()), too_large(problem)) for r in rows]
    from normcheck.diagnosis import diagnose, reproduced_in_size

    confirmed: dict[str, tuple[KnownIssue, Diagnosis]] = {}
    for issue in dict.fromkeys(i for issues in candidates.values() for i in issues):
        found = diagnose(problem, expected, out, rows, hypotheses=issue.hypotheses)
        for check, d in found.items():
            if d.hypothesis is not None and issue in candidates.get(check, ()) and check not in confirmed:
                confirmed[check] = (issue, replace(d, fallback=None))
    for issue in dict.fromkeys(i for issues in candidates.values() for i in issues):
        left = [c for c, issues in candidates.items() if issue in issues and c not in confirmed]
        for check, d in reproduced_in_size(problem, expected, out, left, issue.hypotheses).items():
            confirmed[check] = (issue, d)
    return [_known(r, confirmed.get(r.check), candidates.get(r.check, ())) for r in rows]


def inherited_notes(rows: list[CheckResult], form: str) -> list[CheckResult]:
    """A failing row of user code whose diagnosis (or an alternative it lists) is the hypothesis of a
    documented defect of the framework the code is written for, on a case that defect's fingerprint
    matches: said so in the message, since code that calls that framework's kernel (a module around
    nn.LayerNorm in float16) fails by it. The row stays a failure: the code's output is as wrong,
    and a kernel of the user's own may make the same mistake."""
    from normcheck.frameworks import FORMS, facts_module

    owner = FORMS[form].framework
    issues = [k for k in facts_module(owner).KNOWN_ISSUES if k.impls is None]
    out = []
    for r in rows:
        d = r.diagnosis
        if r.status == FAIL and d is not None and d.hypothesis is not None:
            found = {d.hypothesis, *d.also}
            issue = next((k for k in issues if k.matches(r.case, r.check) and found & set(k.hypotheses)), None)
            if issue is not None:
                note = f"{owner}'s own implementation fails the same way here, a documented defect ({issue.cause}): "
                r = replace(r, message=f"{r.message}; {note}code that calls it inherits it")
        out.append(r)
    return out


def _known(
    r: CheckResult, confirmed: tuple[KnownIssue, Diagnosis] | None, candidates: tuple[KnownIssue, ...]
) -> CheckResult:
    if confirmed is not None:
        issue, evidence = confirmed
        return replace(r, status=KNOWN, message=f"known defect: {issue.cause}. {r.message}", diagnosis=evidence)
    if not candidates:
        return r
    if _plausibly(r):
        # The documented defect's fingerprint matches a finite error no other cause explains, but
        # its hypothesis does not reproduce the row: known, and said to be unconfirmed.
        note = f"known defect (unconfirmed: its hypothesis does not reproduce this row): {candidates[0].cause}. "
        return replace(r, status=KNOWN, message=note + r.message)
    note = f"looks like a known defect ({candidates[0].cause}), but its hypothesis does not reproduce it. "
    return replace(r, message=note + r.message)


def _plausibly(r: CheckResult) -> bool:
    """A row the fingerprint may still account for: finite where the reference is finite (an
    unexplained NaN or inf is never put down to a documented defect) and given no other cause."""
    finite = "NaN or inf where finite values are expected" not in r.message
    return finite and (r.diagnosis is None or r.diagnosis.hypothesis is None)


def _known_as(direct: CheckResult, own: CheckResult | None) -> CheckResult:
    """A --against row is known when the framework's own row of that check is a confirmed known defect."""
    if direct.status != FAIL or own is None or own.diagnosis is None:
        return direct
    cause = own.message.split(". ", 1)[0]
    return replace(direct, status=KNOWN, message=f"{cause}. {direct.message}", diagnosis=own.diagnosis)


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
    if check in ("forward", "grad_input", "residual_out", "grad_residual") and got_dtype != case.dtype:
        return CheckResult(case, check, ERROR, message=f"returned dtype {got_dtype} for {case.dtype} input")
    reason = out_of_range(want, case.dtype)
    if reason:
        return CheckResult(case, check, SKIP, message=reason)
    tol = tolerance_for(case.dtype, witness_err, opts.tolerance)
    cmp = compare(got, want, tol)
    idx = cmp.worst_index
    if not cmp.mismatched or idx is None:  # idx is None only for an empty output, which cannot mismatch
        return CheckResult(case, check, PASS, cmp, tol)
    message = (
        f"{cmp.mismatched}/{cmp.numel} elements ({cmp.mismatched_pct:.3g}%) beyond tolerance; "
        f"worst at {list(idx)}: got {got[idx]:.7g}, expected {want[idx]:.7g}"
    )
    nonfinite = int(np.count_nonzero(~np.isfinite(got) & np.isfinite(want)))
    if nonfinite:
        message += f"; {nonfinite} elements are NaN or inf where finite values are expected"
    return CheckResult(case, check, FAIL, cmp, tol, message)
