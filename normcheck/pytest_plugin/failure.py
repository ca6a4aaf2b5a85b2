"""What a normcheck item says: a failure in torch.testing.assert_close's manner (the check, the
mismatched count and share, the worst element with what it got and what was expected, the
greatest differences and the tolerance), the diagnosis with its fix; a skip's reason; a pass's
summary. Pure functions of the records: nothing runs here."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from normcheck.verify.records import Case, CheckResult, Diagnosis

ORDER = ("fail", "error", "known", "pass", "skip")
CASES_SHOWN = 4  # failing cases shown in full; the rest are counted


def counts_text(rows: Sequence[CheckResult]) -> str:
    counts = {s: sum(r.status == s for r in rows) for s in ORDER}
    words = {"fail": "failed", "error": "error", "known": "known defect", "pass": "passed", "skip": "skipped"}
    plural = {"error", "known"}
    return ", ".join(f"{n} {words[s]}{'s' if s in plural and n != 1 else ''}" for s in ORDER if (n := counts[s]))


def failure_text(title: str, rows: Sequence[CheckResult], failing: Iterable[str], config: str) -> str:
    """The report of an item whose rows include ``failing`` statuses; ``title`` names the slice."""
    bad_statuses = set(failing)
    bad = [r for r in rows if r.status in bad_statuses]
    lines = [f"normcheck: {len(bad)} of {len(rows)} checks failed for {title} ({counts_text(rows)})"]
    by_case: dict[Case, list[CheckResult]] = {}
    for r in bad:
        by_case.setdefault(r.case, []).append(r)
    for case, case_rows in list(by_case.items())[:CASES_SHOWN]:
        lines += ["", _case_heading(case), *_case_lines(case_rows)]
    hidden = list(by_case.values())[CASES_SHOWN:]
    if hidden:
        n = sum(len(v) for v in hidden)
        lines += ["", f"... and {n} more failing checks in {len(hidden)} more cases"]
    if any(r.tolerance is not None for r in bad):
        lines += ["", "An element mismatches when |got - expected| > atol + rtol * |expected|."]
        if any(r.tolerance is not None and r.tolerance.atol > r.tolerance.floor_atol for r in bad):
            lines.append("(cond): atol raised to what a correct implementation achieves in this dtype on this input.")
    lines.append(f"Every row of the config's checks: normcheck verify --config {config}")
    return "\n".join(lines)


def _case_heading(case: Case) -> str:
    from normcheck.ops import fmt_shape

    if case.dtype == "-":  # the row of an implementation that could not be loaded
        return case.impl
    where = ", ".join(
        p for p in (fmt_shape(case.shape), case.params.label(), case.layout, case.device) if p and p != "cpu"
    )
    impl = case.impl if case.framework == "user" else f"{case.framework} {case.impl}"
    return f"{impl} [{where}]" if where else impl


def _case_lines(rows: list[CheckResult]) -> list[str]:
    diagnoses = [r.diagnosis for r in rows]
    shared = diagnoses[0] if len({_diagnosis_key(d) for d in diagnoses}) == 1 else None
    lines: list[str] = []
    for r in rows:
        lines += row_lines(r)
        if shared is None and r.diagnosis is not None:
            lines += ["    " + line for line in diagnosis_lines(r.diagnosis)]
    if shared is not None:
        lines += ["  " + line for line in diagnosis_lines(shared)]
    return lines


def _diagnosis_key(d: Diagnosis | None) -> tuple[str, ...] | None:
    return None if d is None else (d.summary, *d.also)


def row_lines(r: CheckResult) -> list[str]:
    """One failing (or error, or known) row: its check and what was compared."""
    cmp, tol = r.comparison, r.tolerance
    if cmp is None or tol is None:  # an error row, or a failure that is not a comparison
        return [f"  {r.status.upper()} {r.check}: {r.message}"]
    head = f"  {r.status.upper()} {r.check}"
    known = r.message.partition(". ")[0] if r.message.startswith(("known defect", "looks like a known")) else ""
    lines = [f"{head}: {known}" if known else head]
    lines.append(f"    Mismatched elements: {cmp.mismatched} / {cmp.numel} ({cmp.mismatched_pct:.1f}%)")
    where = f" at index {tuple(cmp.worst_index)}" if cmp.worst_index is not None else ""
    got, expected = cmp.worst_got, cmp.worst_expected
    if got is not None and expected is not None:
        if math.isfinite(got):
            allowed = tol.atol + tol.rtol * abs(expected)
            detail = f"difference {abs(got - expected):.3g}, allowed {allowed:.3g}"
        else:
            detail = "not finite"
        lines.append(f"    Worst element{where}: got {got:.7g}, expected {expected:.7g} ({detail})")
        nonfinite = [part for part in r.message.split("; ") if "NaN or inf" in part]
        lines += [f"    {part}" for part in nonfinite]
    else:
        lines.append(f"    {r.message}" if r.message else f"    Worst element{where}")
    lines.append(f"    Greatest absolute difference: {cmp.max_abs_err:.3g}")
    lines.append(f"    Greatest relative difference: {cmp.max_rel_err:.3g}")
    lines.append(f"    Tolerance: {tol.describe()}")
    return lines


def diagnosis_lines(d: Diagnosis) -> list[str]:
    head = d.cause if d.hypothesis else "cause unknown"
    lines = [f"Diagnosis: {head}" + (" (ambiguous)" if d.ambiguous else "")]
    if d.evidence:
        lines.append(f"  evidence: {d.evidence}")
    if d.also:
        lines.append(f"  fits as well: {', '.join(d.also)}")
    if d.fix:
        lines.append(f"Fix: {d.fix}")
    return lines


def skip_reason(rows: Sequence[CheckResult]) -> str:
    reasons = list(dict.fromkeys(r.message or "skipped" for r in rows))
    more = f" (and {len(reasons) - 3} more reasons)" if len(reasons) > 3 else ""
    return "normcheck: " + "; ".join(reasons[:3]) + more


def passed_text(title: str, rows: Sequence[CheckResult]) -> str:
    """The report section of a passing item: its counts, and what it let pass (known defects, skips)."""
    lines = [f"{title}: {len(rows)} checks, {counts_text(rows)}"]
    for r in rows:
        if r.status in ("known", "skip"):
            lines.append(f"  {r.status.upper()} {r.check} of {_case_heading(r.case)}: {r.message}")
    return "\n".join(lines)
