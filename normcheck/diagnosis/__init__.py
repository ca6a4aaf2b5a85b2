"""Why a check failed: re-run the reference under each known mistake and report the one that
reproduces the implementation's outputs, with the numbers that show it. Never a cause without
that evidence: when no hypothesis brings the error within tolerance, the cause is unknown."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, replace

import numpy as np

from normcheck.diagnosis.hypotheses import (
    DISTRIBUTED_ONLY,
    FORMULA,
    HYPOTHESES,
    NUMERIC,
    Context,
    Hypothesis,
    Prediction,
)
from normcheck.diagnosis.variants import plain
from normcheck.diagnosis.weight_standardization import WS_HYPOTHESES
from normcheck.diagnosis.weight_standardization import applies as is_ws_case
from normcheck.dtypes import EPS
from normcheck.frameworks.base import RunOutput
from normcheck.ops.adaptive_layer_norm import ADALN, CHECK_LABELS, check_label
from normcheck.problem import Problem
from normcheck.reference import reference
from normcheck.verify.records import FAIL, PASS, CheckResult, Comparison, Diagnosis, Tolerance
from normcheck.verify.tolerance import CONDITIONING_FACTOR, witness_errors

__all__ = ["HYPOTHESES", "Diagnosis", "Hypothesis", "diagnose"]


@dataclass(frozen=True)
class _Row:
    """A judged check of the case (pass or fail): the error found and the tolerance it was held to."""

    status: str
    comparison: Comparison
    tolerance: Tolerance


@dataclass
class _Verdict:
    hypothesis: Hypothesis
    prediction: Prediction
    explained: dict[str, float]  # failing check -> max abs err under the hypothesis
    score: float  # worst err / allowance over the explained checks
    tols: dict[str, Tolerance]


def _err(got: np.ndarray, want: np.ndarray, tol: Tolerance) -> tuple[bool, float]:
    """(within tolerance, max abs err), counting non-finite values where the mistake predicts
    non-finite ones as agreement: a mistake that overflows or divides by zero where the
    implementation does is reproduced (whether one element becomes inf or NaN depends on the
    order of operations alone)."""
    g = np.asarray(got, dtype=np.float64)
    w = np.asarray(want, dtype=np.float64)
    if g.shape != w.shape:
        return False, float("inf")
    with np.errstate(all="ignore"):
        same = ~np.isfinite(g) & ~np.isfinite(w)
        diff = np.where(same, 0.0, np.abs(g - w))
        diff = np.where(np.isnan(diff), np.inf, diff)
        allowed = tol.atol + tol.rtol * np.where(np.isfinite(w), np.abs(w), 0.0)
    if not diff.size:
        return True, 0.0
    return bool(np.all(diff <= allowed)), float(diff.max())


def _tolerances(pred: Prediction, rows: dict[str, _Row]) -> dict[str, Tolerance]:
    """Each row's tolerance, widened to the conditioning of the mistaken case where it has one."""
    tols = {c: r.tolerance for c, r in rows.items()}
    with np.errstate(all="ignore"):
        if pred.problem is not None:
            errs = witness_errors(pred.problem, reference(pred.problem))
        elif pred.witness is not None:
            errs = {c: float(np.nanmax(np.abs(w - pred.values[c]), initial=0.0)) for c, w in pred.witness.items()}
        else:
            return tols
    for c, tol in tols.items():
        atol = tol.floor_atol + CONDITIONING_FACTOR * errs.get(c, 0.0)
        if np.isfinite(atol) and atol > tol.atol:
            tols[c] = replace(tol, atol=atol, witness_err=errs[c])
    return tols


# A hypothesis explains a check only when it brings the error down at least this many times:
# within tolerance alone is not enough where the tolerance is wide.
CUT = 10.0
# Reproducing a check to within this many units in the last place of its largest value is as
# exact as the dtype can show: a failure of a few ulps cannot be cut tenfold.
FLOOR_ULPS = 2.0
# Two explanations fit equally when the second's error (against its allowance) is within this
# factor of the first's, or both reproduce to this fraction of their allowance.
EQUAL_FIT, EXACT_FIT = 2.0, 0.01


def _judge(
    pred: Prediction,
    hyp: Hypothesis,
    expected: dict[str, np.ndarray],
    got: dict[str, np.ndarray],
    rows: dict[str, _Row],
    tols: dict[str, Tolerance],
    dtype: str,
    only: tuple[str, ...] | None = None,
) -> _Verdict | None:
    judged = only or pred.only or tuple(rows)
    explained: dict[str, float] = {}
    score = 0.0
    for check in judged:
        row = rows.get(check)
        if row is None or check not in got:
            continue
        want = pred.values.get(check, expected[check])
        ok, err = _err(got[check], want, tols[check])
        if not ok:
            return None
        if row.status == FAIL:
            if not pred.by_magnitude and err * CUT > row.comparison.max_abs_err and err > _rounding_floor(want, dtype):
                return None
            explained[check] = err
            score = max(score, err / max(tols[check].atol, 1e-300))
    return _Verdict(hyp, pred, explained, score, tols) if explained else None


def _rounding_floor(want: np.ndarray, dtype: str) -> float:
    with np.errstate(all="ignore"):
        peak = float(np.nanmax(np.abs(np.where(np.isfinite(want), want, 0.0)), initial=0.0))
    return FLOOR_ULPS * EPS[dtype] * peak


def _evidence(v: _Verdict, rows: dict[str, _Row]) -> str:
    check = max(v.explained, key=lambda c: rows[c].comparison.max_abs_err / max(rows[c].tolerance.atol, 1e-300))
    before = rows[check].comparison.max_abs_err
    tol = v.tols[check]
    text = (
        f"{check}: max abs err {before:.2g} -> {v.explained[check]:.2g} under '{v.prediction.title}' "
        f"(allowed {tol.atol:.2g} + {tol.rtol:.2g}*|expected|)"
    )
    return text + (f"; {v.prediction.note}" if v.prediction.note else "")


def _named(
    best: _Verdict, rest: list[_Verdict], rows: dict[str, _Row], scope: str, evidence_tail: str = ""
) -> Diagnosis:
    """The diagnosis of ``best``; "ambiguous" when another hypothesis in ``rest`` fits as well."""
    others = [v for v in rest if v.hypothesis.id != best.hypothesis.id]
    also = tuple(dict.fromkeys(v.hypothesis.id for v in others))
    rival = next((v for v in others if v.score <= max(EQUAL_FIT * best.score, EXACT_FIT)), None)
    cause = best.prediction.title
    if rival is not None:
        cause = f"ambiguous: {best.prediction.title} or {rival.prediction.title}"
    return Diagnosis(
        best.hypothesis.id,
        cause,
        _evidence(best, rows) + evidence_tail,
        scope,
        also,
        fix=best.prediction.fix if rival is None else "",
        family=best.hypothesis.family,
        ambiguous=rival is not None,
    )


def _unknown(tested: int) -> Diagnosis:
    return Diagnosis(
        None, "unknown", f"none of the {tested} known mistakes normcheck tests reproduces this output within tolerance"
    )


def _choose(
    verdicts: list[_Verdict], partial: dict[str, list[_Verdict]], failing: list[str], rows: dict[str, _Row], tested: int
) -> dict[str, Diagnosis]:
    """Per failing check, the best explanation: one that explains the whole case first, then one
    that explains the check alone, else unknown."""
    whole = [v for v in verdicts if set(v.explained) == set(failing) or v.prediction.only]
    if whole:
        whole.sort(key=lambda v: (v.prediction.only is not None, v.score))
        return dict.fromkeys(failing, _named(whole[0], whole[1:], rows, "case"))
    out: dict[str, Diagnosis] = {}
    for check in failing:
        found = sorted(partial[check], key=lambda v: v.score)
        if found:
            tail = "; it explains this check only, not the case's other failures"
            out[check] = _named(found[0], found[1:], rows, "check", tail)
        else:
            out[check] = _unknown(tested)
    return out


def diagnose(
    problem: Problem,
    expected: dict[str, np.ndarray],
    out: RunOutput,
    results: list[CheckResult],
    hypotheses: Collection[str] | None = None,
) -> dict[str, Diagnosis]:
    """A diagnosis for each failing check of one case, by check name; ``hypotheses``: the ids
    to try (default: all). A formula cause carries, as ``fallback``, the best numeric one (or
    unknown) for the cross-dtype reconciliation (``reconcile``)."""
    rows = {
        r.check: _Row(r.status, r.comparison, r.tolerance)
        for r in results
        if r.status in (PASS, FAIL) and r.comparison is not None and r.tolerance is not None
    }
    failing = [c for c, r in rows.items() if r.status == FAIL]
    if not failing or problem.x.size == 0:  # an empty tensor has no formula to fit
        return {}
    # a mistake only distributed code can make is tried only when asked for (a --world-size run);
    # Weight Standardization has a library of its own (normcheck.diagnosis.weight_standardization)
    library = WS_HYPOTHESES if is_ws_case(problem) else HYPOTHESES
    tried = (
        [h for h in library if h.id in hypotheses]
        if hypotheses is not None
        else [h for h in library if h.id not in DISTRIBUTED_ONLY]
    )
    predict = _predictor(problem, expected, out.values)
    verdicts: list[_Verdict] = []
    partial: dict[str, list[_Verdict]] = {c: [] for c in failing}
    for hyp in tried:
        with np.errstate(all="ignore"):
            predictions = predict(hyp)
        for pred in predictions:
            tols = _tolerances(pred, rows)
            verdict = _judge(pred, hyp, expected, out.values, rows, tols, problem.dtype)
            if verdict is not None:
                verdicts.append(verdict)
                continue
            for check in failing:  # does it explain this check alone?
                alone = _judge(pred, hyp, expected, out.values, rows, tols, problem.dtype, only=(check,))
                if alone is not None:
                    partial[check].append(alone)
    found = _choose(verdicts, partial, failing, rows, len(tried))
    if not any(d.family == FORMULA for d in found.values()):
        return _labelled(problem.op, found)
    numeric = _choose(
        [v for v in verdicts if v.hypothesis.family == NUMERIC],
        {c: [v for v in vs if v.hypothesis.family == NUMERIC] for c, vs in partial.items()},
        failing,
        rows,
        len(tried),
    )
    return _labelled(
        problem.op, {c: replace(d, fallback=numeric[c]) if d.family == FORMULA else d for c, d in found.items()}
    )


def _labelled(op: str, found: dict[str, Diagnosis]) -> dict[str, Diagnosis]:
    """The evidence with the checks named as reports name them (adaLN's grad_scale, grad_shift)."""
    if op != ADALN:
        return found
    out = {}
    for check, d in found.items():
        evidence = d.evidence
        for internal in CHECK_LABELS:
            evidence = evidence.replace(f"{internal}:", f"{check_label(op, internal)}:")
        out[check] = replace(d, evidence=evidence)
    return out


def _predictor(
    problem: Problem, expected: dict[str, np.ndarray], got: dict[str, np.ndarray]
) -> Callable[[Hypothesis], list[Prediction]]:
    """What each hypothesis predicts for the case. On an op variant or a fused op, the plain
    ops' hypotheses predict on the plain op the case reduces to and their predictions are
    carried back (normcheck.diagnosis.variants); those of the variants predict on the case."""
    ctx = Context(problem, expected, got)
    reduced = plain(problem, expected, got)
    if reduced is None:
        return lambda hyp: hyp.predict(ctx)
    plain_ctx = Context(reduced.problem, reduced.expected, reduced.got)

    def predict(hyp: Hypothesis) -> list[Prediction]:
        if hyp.on_case:
            return hyp.predict(ctx)
        return [
            replace(
                pred,
                values=reduced.lift(pred.values) or {},
                witness=reduced.lift(pred.witness),
                only=reduced.lift_only(pred.only),
            )
            for pred in hyp.predict(plain_ctx)
        ]

    return predict


# A documented numeric defect reproduces a row in size when its simulation errs at least this
# fraction as much as the implementation does (and no more than this many times as much): the
# same arithmetic summed in another order lands within a few times of it, a formula mistake or
# correct arithmetic orders of magnitude away.
SIZE_BAND = (0.2, 5.0)


def reproduced_in_size(
    problem: Problem,
    expected: dict[str, np.ndarray],
    out: RunOutput,
    checks: Collection[str],
    hypotheses: Collection[str],
) -> dict[str, Diagnosis]:
    """For a documented defect whose arithmetic is rounding noise (a half-precision graph summed
    in another order than any simulation can know), evidence by size: a numeric hypothesis of
    the defect, simulated on the case once, errs on a check by about as much as the
    implementation does, and overflows about where the implementation does. By check name,
    for the ``checks`` so reproduced."""
    observed = {c: _observed(out.values.get(c), expected.get(c)) for c in checks}
    wanted = {c: e for c, e in observed.items() if e}
    found: dict[str, Diagnosis] = {}
    if not wanted:
        return found
    predict = _predictor(problem, expected, out.values)
    with np.errstate(all="ignore"):
        for hyp in HYPOTHESES:
            if hyp.id not in hypotheses or hyp.family != NUMERIC:
                continue
            for pred in predict(hyp):
                for check, err in wanted.items():
                    value = pred.values.get(check)
                    if check in found or value is None or not _blows_up_alike(out.values[check], value):
                        continue
                    simulated = _finite_err(value, np.asarray(expected[check], dtype=np.float64))
                    if simulated and SIZE_BAND[0] * err <= simulated <= SIZE_BAND[1] * err:
                        evidence = (
                            f"{check}: max abs err {err:.2g}; '{pred.title}' errs by {simulated:.2g} on this case "
                            "(reproduced in size: the rounding order of the implementation cannot be known)"
                        )
                        found[check] = Diagnosis(hyp.id, pred.title, evidence, "check", fix=pred.fix, family=NUMERIC)
    return found


def _observed(got: np.ndarray | None, want: np.ndarray | None) -> float | None:
    """The implementation's largest finite error on a check, None where there is none to size."""
    if got is None or want is None or not np.size(got):
        return None
    with np.errstate(all="ignore"):
        return _finite_err(got, np.asarray(want, dtype=np.float64)) or None


def _blows_up_alike(got: np.ndarray, value: np.ndarray) -> bool:
    """The implementation's non-finite elements are as many as the simulation's, at least half of
    them in the same places (which partial sum overflows first depends on the summation order)."""
    bad, predicted = ~np.isfinite(got), ~np.isfinite(value)
    if not bad.any():
        return True
    return (
        abs(int(bad.sum()) - int(predicted.sum())) <= bad.sum() // 2 and 2 * int((bad & predicted).sum()) >= bad.sum()
    )


def _finite_err(got: np.ndarray, want: np.ndarray) -> float | None:
    g = np.asarray(got, dtype=np.float64)
    ok = np.isfinite(g) & np.isfinite(want)
    return float(np.abs(g[ok] - want[ok]).max()) if ok.any() else None
