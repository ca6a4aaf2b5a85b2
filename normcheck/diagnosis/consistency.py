"""Causes checked across dtypes: a formula mistake (eps, axes, variance bias, grouping, affine
order, gradient cuts, momentum, running statistics) is in the math, so it shows in every dtype.
On a float16/bfloat16 row one is named only when the same implementation's float32 or float64
rows of the same case are explained by it too; otherwise the row gets its numeric diagnosis
(precision, cancellation) or "unknown", never the formula name alone. Where no full-precision
row of the case ran, nothing refutes the formula mistake either: a numeric cause that fits is
then named as "ambiguous" between the two."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from normcheck.diagnosis.hypotheses import FORMULA
from normcheck.dtypes import HALF
from normcheck.verify.records import Case, CheckResult, Diagnosis

_Key = tuple


def _key(case: Case) -> _Key:
    """The case but for its dtype."""
    return (case.framework, case.impl, case.op, case.shape, case.params, case.kind, case.layout, case.device)


def reconcile(results: Iterable[CheckResult]) -> list[CheckResult]:
    """The rows with every half-precision formula cause confirmed or replaced (see module doc)."""
    rows = list(results)
    ran: set[_Key] = set()
    confirmed: dict[_Key, set[str]] = {}
    for r in rows:
        if r.case.dtype in HALF:
            continue
        ran.add(_key(r.case))
        d = r.diagnosis
        if d is not None and d.hypothesis is not None:
            confirmed.setdefault(_key(r.case), set()).update((d.hypothesis, *d.also))
    return [_reconciled(r, ran, confirmed) for r in rows]


def _reconciled(r: CheckResult, ran: set[_Key], confirmed: dict[_Key, set[str]]) -> CheckResult:
    d = r.diagnosis
    if d is None:
        return r
    if r.case.dtype not in HALF or d.family != FORMULA or d.hypothesis in confirmed.get(_key(r.case), ()):
        return r if d.fallback is None else replace(r, diagnosis=replace(d, fallback=None))
    why = (
        "the float32/float64 rows of this case are not explained by it"
        if _key(r.case) in ran
        else "no float32 or float64 row of this case ran to confirm it (add --dtype float32)"
    )
    base = d.fallback or Diagnosis(None, "unknown", "no numeric cause reproduces this output within tolerance")
    note = f"'{d.cause}' fits this row too, but a formula mistake shows in full precision and {why}"
    base = replace(base, evidence=f"{base.evidence}; {note}", fallback=None)
    if _key(r.case) not in ran and base.hypothesis is not None and not base.ambiguous:
        # nothing ran that could refute the formula mistake: the numeric cause is one of two
        cause = f"ambiguous: {base.cause} or {d.cause.removeprefix('ambiguous: ')}"
        base = replace(base, cause=cause, also=(d.hypothesis, *base.also), fix="", ambiguous=True)  # type: ignore[arg-type]
    return replace(r, diagnosis=base)
