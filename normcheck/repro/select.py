"""The distinct failures of a run, one representative row each: the failing and known-defect rows
grouped by implementation, op, check and cause, and the row of each group furthest beyond its
tolerance."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from normcheck.engine.tasks import Plan, PlannedUnit
from normcheck.frameworks.base import FrameworkFacts
from normcheck.verify.records import FAIL, KNOWN, Case, CheckResult


@dataclass(frozen=True)
class Failure:
    """One distinct failure: its representative row, where that row's case was planned, and its cause."""

    row: CheckResult
    rows: int  # the rows of the run with this failure
    cause: str  # the known defect, the diagnosed mistake, or "cause unknown"
    slug: str  # the cause in a file name
    plan: Plan
    unit: PlannedUnit

    @property
    def facts(self) -> FrameworkFacts:
        return self.plan.frameworks[self.unit.framework]


def distinct_failures(runs: Sequence[tuple[Plan, Sequence[CheckResult]]]) -> list[Failure]:
    """One Failure per (implementation, op, check, cause) of the failing and known rows, in the
    order the first of each appears; ``runs`` pairs each plan with the rows it produced."""
    groups: dict[tuple, list[tuple[CheckResult, Plan, PlannedUnit, str, str]]] = {}
    for plan, results in runs:
        units = {case: unit for unit in plan.units for case in unit.cases}
        for row in results:
            unit = units.get(row.case)
            if row.status not in (FAIL, KNOWN) or unit is None:
                continue
            cause, slug = _cause(row, plan.frameworks[unit.framework])
            c = row.case
            impl = plan.request.impl if c.framework == "user" else None
            key = (c.framework, str(impl), c.impl, c.op, row.check, row.against, cause)
            groups.setdefault(key, []).append((row, plan, unit, cause, slug))
    failures = []
    for members in groups.values():
        row, plan, unit, cause, slug = max(members, key=lambda m: excess(m[0]))
        failures.append(Failure(row, len(members), cause, slug, plan, unit))
    return failures


def excess(row: CheckResult) -> float:
    """How far a row is beyond its tolerance: its largest error over the absolute allowance
    (infinite for NaN or inf outputs, 0 for a row without numbers)."""
    if row.comparison is None or row.tolerance is None:
        return 0.0
    err = row.comparison.max_abs_err
    if not math.isfinite(err):
        return math.inf
    return err / row.tolerance.atol if row.tolerance.atol > 0 else math.inf


def _cause(row: CheckResult, facts: FrameworkFacts) -> tuple[str, str]:
    """(the cause, as a file name's words): the matching known defect, the diagnosed mistake, or unknown."""
    if row.status == KNOWN:
        issue = facts.known_issue(row.case, row.check)
        if issue is not None:
            return issue.cause, f"known_defect_{facts.known_issues.index(issue) + 1}"
    d = row.diagnosis
    if d is not None and d.hypothesis:
        return d.cause, d.hypothesis
    return "cause unknown", "cause_unknown"


def file_stem(case: Case, check: str, slug: str) -> str:
    """A readable file name (without suffix): framework_impl_op_check_cause, sanitized."""
    raw = "_".join((case.framework, case.impl, case.op, check, slug))
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9.-]", "_", raw)).strip("_.")
