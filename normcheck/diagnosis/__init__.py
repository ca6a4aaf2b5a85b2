"""Why a check failed: re-run the reference under each known mistake and report the one that
reproduces the implementation's outputs, with the numbers that show it. Never a cause without
that evidence: when no hypothesis brings the error within tolerance, the cause is unknown."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from normcheck.diagnosis.hypotheses import HYPOTHESES, Context, Hypothesis, Prediction
from normcheck.frameworks.base import RunOutput
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
    """(within tolerance, max abs err), counting matching NaNs and infinities as agreement: a
    mistake that divides by zero where the implementation does is reproduced exactly."""
    g = np.asarray(got, dtype=np.float64)
    w = np.asarray(want, dtype=np.float64)
    if g.shape != w.shape:
        return False, float("inf")
    with np.errstate(all="ignore"):
        same = (np.isnan(g) & np.isnan(w)) | (np.isinf(g) & (g == w))
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


def _judge(
    pred: Prediction,
    hyp: Hypothesis,
    expected: dict[str, np.ndarray],
    got: dict[str, np.ndarray],
    rows: dict[str, _Row],
    tols: dict[str, Tolerance],
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
            explained[check] = err
            score = max(score, err / max(tols[check].atol, 1e-300))
    return _Verdict(hyp, pred, explained, score, tols) if explained else None


def _evidence(v: _Verdict, rows: dict[str, _Row]) -> str:
    check = max(v.explained, key=lambda c: rows[c].comparison.max_abs_err / max(rows[c].tolerance.atol, 1e-300))
    before = rows[check].comparison.max_abs_err
    tol = v.tols[check]
    text = (
        f"{check}: max abs err {before:.2g} -> {v.explained[check]:.2g} under '{v.prediction.title}' "
        f"(allowed {tol.atol:.2g} + {tol.rtol:.2g}*|expected|)"
    )
    return text + (f"; {v.prediction.note}" if v.prediction.note else "")


def diagnose(
    problem: Problem, expected: dict[str, np.ndarray], out: RunOutput, results: list[CheckResult]
) -> dict[str, Diagnosis]:
    """A diagnosis for each failing check of one case, by check name."""
    rows = {
        r.check: _Row(r.status, r.comparison, r.tolerance)
        for r in results
        if r.status in (PASS, FAIL) and r.comparison is not None and r.tolerance is not None
    }
    failing = [c for c, r in rows.items() if r.status == FAIL]
    if not failing or problem.x.size == 0:  # an empty tensor has no formula to fit
        return {}
    ctx = Context(problem, expected, out.values)
    verdicts: list[_Verdict] = []
    partial: dict[str, list[_Verdict]] = {c: [] for c in failing}
    for hyp in HYPOTHESES:
        with np.errstate(all="ignore"):
            predictions = hyp.predict(ctx)
        for pred in predictions:
            tols = _tolerances(pred, rows)
            verdict = _judge(pred, hyp, expected, out.values, rows, tols)
            if verdict is not None:
                verdicts.append(verdict)
                continue
            for check in failing:  # does it explain this check alone?
                alone = _judge(pred, hyp, expected, out.values, rows, tols, only=(check,))
                if alone is not None:
                    partial[check].append(alone)
    whole = [v for v in verdicts if set(v.explained) == set(failing) or v.prediction.only]
    if whole:
        whole.sort(key=lambda v: (v.prediction.only is not None, v.score))
        best = whole[0]
        also = tuple(dict.fromkeys(v.hypothesis.id for v in whole[1:] if v.hypothesis.id != best.hypothesis.id))
        d = Diagnosis(best.hypothesis.id, best.prediction.title, _evidence(best, rows), "case", also)
        return dict.fromkeys(failing, d)
    tested = sum(1 for _ in HYPOTHESES)
    out_rows: dict[str, Diagnosis] = {}
    for check in failing:
        found = sorted(partial[check], key=lambda v: v.score)
        if found:
            best = found[0]
            out_rows[check] = Diagnosis(
                best.hypothesis.id,
                best.prediction.title,
                _evidence(best, rows) + "; it explains this check only, not the case's other failures",
                "check",
            )
        else:
            out_rows[check] = Diagnosis(
                None,
                "unknown",
                f"none of the {tested} known mistakes normcheck tests reproduces this output within tolerance",
            )
    return out_rows
