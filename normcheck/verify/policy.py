"""--policy: every case's forward output held to a named precision policy (normcheck.policies),
ulp for ulp, beside the float64 reference (which keeps its own tolerance). The parity row passes
when every element lies in the policy's rounding band; a failing one says which policy (or which
one-step change of the claimed policy) the output matches instead, when exactly one does."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from normcheck.dtypes import DTYPES
from normcheck.frameworks.base import RunOutput
from normcheck.names import DtypeName
from normcheck.ops import OpParams
from normcheck.policies import FLOAT32, GEMMA, POLICIES, Emulated, Policy, emulate, mutations
from normcheck.problem import Problem
from normcheck.verify.records import FAIL, PASS, SKIP, Case, CheckResult, Comparison, Diagnosis

CHECK = "forward"  # the output a policy states; the gradients are the reference's to judge
FAMILY = "policy"  # Diagnosis.family of a parity row's "matches"


def against_label(name: str) -> str:
    """The ``against`` column of a parity row: what the output was compared with."""
    return f"policy:{name}"


def policy_problem(name: str, ops: tuple[str, ...], variant: str | None) -> str | None:
    """Why ``--policy name`` cannot check ``ops`` (with ``variant``), or None."""
    if name not in POLICIES:
        return f"unknown policy {name!r}; choose from {', '.join(POLICIES)}"
    pol = POLICIES[name]
    if not ops:
        return f"--policy {name} needs --op: it covers {pol.coverage()}"
    for op in ops:
        if not pol.covers(op, variant):
            what = f"--op {op}" + (f" --variant {variant}" if variant else "")
            return f"policy {name} covers {pol.coverage()}, not {what}"
    return None


def policy_params(params: OpParams, name: str | None) -> OpParams:
    """``params`` with the weight stored in the dtype policy ``name`` keeps it in (float32 master
    weights); unchanged without a policy, a weight, or a weight kept in the input dtype."""
    if name is None or not params.affine or POLICIES[name].weight != FLOAT32:
        return params
    return replace(params, weight_dtype=FLOAT32)


def default_dtypes(name: str) -> tuple[DtypeName, ...]:
    """The dtypes a policy is checked in when none are named: a policy that computes in float32
    rounds float64 input to float32 by its own rule, so its float64 rows could only fail the
    float64 reference; ``--dtype float64`` still runs them."""
    if POLICIES[name].compute == FLOAT32:
        return ("float32", "float16", "bfloat16")
    return ("float32", "float16", "bfloat16", "float64")


@dataclass(frozen=True)
class _Candidate:
    label: str
    policy: Policy
    emulated: Emulated
    named: bool  # one of the named policies (a one-step change of the claimed one otherwise)


def policy_rows(case: Case, problem: Problem, out: RunOutput, name: str) -> list[CheckResult]:
    """The parity row of one case against policy ``name``: pass when the forward output is, element
    by element, inside the policy's rounding band and of its output dtype; a failure names what it
    matches (see ``_matches``)."""
    pol = POLICIES[name]
    row = lambda status, **kw: CheckResult(case, CHECK, status, against=against_label(name), **kw)
    got, got_dtype = out.values.get(CHECK), out.dtypes.get(CHECK)
    if got is None or got_dtype not in DTYPES:
        return [row(SKIP, message="no forward output to compare with the policy")]
    emulated = _emulate(pol, problem)
    if got.shape != emulated.center.shape:
        return [row(SKIP, message="the output's shape is not the input's; see the forward row")]
    outside = emulated.outside(got) if got_dtype == emulated.dtype else np.ones(got.shape, dtype=bool)
    cmp = _comparison(got, emulated, outside)
    if not outside.any():
        return [row(PASS, comparison=cmp, message=_passed(name, got, emulated))]
    message = _mismatch(name, got, got_dtype, emulated, outside, cmp)
    found = _matches(pol, problem, got, got_dtype, cmp.mismatched)
    short = found.cause.split(" (")[0]  # the diagnosis says what else computes the same
    return [row(FAIL, comparison=cmp, message=f"{message}; {short}", diagnosis=found)]


def _emulate(pol: Policy, problem: Problem) -> Emulated:
    params = problem.params
    return emulate(
        pol,
        problem.x,
        problem.weight,
        problem.eps,
        params.normalized_ndim or 1,
        problem.dtype,
        gemma=params.variant == GEMMA,
        weight_dtype=params.weight_dtype or problem.dtype,
    )


def _comparison(got: np.ndarray, emulated: Emulated, outside: np.ndarray) -> Comparison:
    with np.errstate(all="ignore"):
        diff = np.abs(np.asarray(got, dtype=np.float64) - emulated.center)
        diff = np.where(np.isnan(diff) & (np.isnan(got) == np.isnan(emulated.center)), 0.0, diff)
        rel = diff / np.abs(emulated.center)
    if not got.size:
        return Comparison(0.0, 0.0, 0, 0, None)
    worst_of = np.where(outside, np.nan_to_num(diff, nan=np.inf), -1.0) if outside.any() else diff
    idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(worst_of)), got.shape))
    finite_rel = rel[np.isfinite(rel)]
    return Comparison(
        max_abs_err=float(np.nanmax(diff)) if np.isfinite(diff).any() else float("inf"),
        max_rel_err=float(finite_rel.max()) if finite_rel.size else 0.0,
        mismatched=int(outside.sum()),
        numel=int(got.size),
        worst_index=idx,
        worst_got=float(got[idx]),
        worst_expected=float(emulated.center[idx]),
    )


def _passed(name: str, got: np.ndarray, emulated: Emulated) -> str:
    same = int(np.sum((got == emulated.center) | (np.isnan(got) & np.isnan(emulated.center))))
    rest = "" if same == got.size else ", the rest within the ulps its sum of squares may move them"
    return f"inside policy {name}'s rounding band: {same}/{got.size} elements equal to its emulation bit for bit{rest}"


def _mismatch(
    name: str, got: np.ndarray, got_dtype: str, emulated: Emulated, outside: np.ndarray, cmp: Comparison
) -> str:
    if got_dtype != emulated.dtype:
        return f"returned {got_dtype}; policy {name} outputs {emulated.dtype}"
    idx = cmp.worst_index
    assert idx is not None
    far = _ulps(got[idx], emulated.center[idx], emulated.dtype)
    return (
        f"{cmp.mismatched}/{cmp.numel} elements ({cmp.mismatched_pct:.3g}%) outside policy {name}'s rounding band; "
        f"worst at {list(idx)}: got {got[idx]:.7g}, {name} gives {emulated.center[idx]:.7g} "
        f"({far} of {emulated.dtype} away)"
    )


def _ulps(got: float, want: float, dtype: str) -> str:
    """|got - want| in units in the last place of ``want`` in ``dtype``, in words."""
    if not (np.isfinite(got) and np.isfinite(want)):
        return "not finite"
    exponent = np.floor(np.log2(abs(want))) if want else -np.inf
    bits = {"float64": 52, "float32": 23, "float16": 10, "bfloat16": 7}[dtype]
    lowest = {"float64": -1022, "float32": -126, "float16": -14, "bfloat16": -126}[dtype]
    ulp = 2.0 ** (max(exponent, lowest) - bits)
    n = abs(got - want) / ulp
    return f"{n:.3g} ulp" if n < 100 else f"{n:.3g} ulps"


def _matches(claimed: Policy, problem: Problem, got: np.ndarray, got_dtype: str, missed: int) -> Diagnosis:
    """What the output computes instead: every other policy that covers the case, then the
    claimed policy with one declared step done the other way; named only when the output lies
    in its band and in nobody else's, unless the others' bands are identical on this case (then
    they compute the same here and are named together); ambiguous when several differ."""
    variant = problem.params.variant
    candidates = [
        _Candidate(p.name, p, _emulate(p, problem), True)
        for p in POLICIES.values()
        if p.name != claimed.name and p.covers(problem.op, variant)
    ]
    candidates += [
        _Candidate(label, p, _emulate(p, problem), False)
        for label, p in mutations(claimed)
        if variant != GEMMA or p.offset is not None
    ]
    fits = [c for c in candidates if c.emulated.dtype == got_dtype and not c.emulated.outside(got).any()]
    tried = ", ".join(c.label for c in candidates)
    if not fits:
        return Diagnosis(
            None,
            "matches no policy",
            f"the output is in the rounding band of none of: {tried}",
            scope="check",
            family=FAMILY,
        )
    groups: list[list[_Candidate]] = []
    for c in fits:
        same = next((g for g in groups if _same_band(g[0].emulated, c.emulated)), None)
        if same is None:
            groups.append([c])
        else:
            same.append(c)
    first = groups[0]
    evidence = f"all {got.size} elements inside {first[0].label}'s rounding band, {missed} outside {claimed.name}'s"
    if len(groups) > 1:
        labels = [g[0].label for g in groups]
        return Diagnosis(
            f"policy:{first[0].label}",
            f"ambiguous: matches {' or '.join(labels)}",
            f"the output is inside the bands of {', '.join(labels)}, which differ on this case",
            scope="check",
            also=tuple(f"policy:{g[0].label}" for g in groups[1:]),
            family=FAMILY,
            ambiguous=True,
        )
    same_here = [c.label for c in first[1:]]
    note = (
        f" ({', '.join(same_here)} {'computes' if len(same_here) == 1 else 'compute'} the same here)"
        if same_here
        else ""
    )
    fix = (
        f"compute as policy {claimed.name} states: {claimed.formula()}"
        if first[0].named
        else f"do that step as policy {claimed.name} states: {claimed.formula()}"
    )
    return Diagnosis(
        f"policy:{first[0].label}",
        f"matches {first[0].label}{note}",
        evidence,
        scope="check",
        also=tuple(f"policy:{label}" for label in same_here),
        fix=fix,
        family=FAMILY,
    )


def _same_band(a: Emulated, b: Emulated) -> bool:
    return (
        a.dtype == b.dtype
        and np.array_equal(a.low, b.low, equal_nan=True)
        and np.array_equal(a.high, b.high, equal_nan=True)
    )
