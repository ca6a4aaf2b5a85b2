"""How verify's quick cases (normcheck.verify.quick_cases) were chosen: ``derive`` is the fewest
cases of each op's default grid that expose every known mistake the grid exposes, in every
dtype, rank of input and kind of parameters the grid has.

How the quick cases are chosen (``derive``), per op, as a set cover solved greedily; what must
be covered:
- every known mistake (normcheck.diagnosis's hypotheses) the grid exposes anywhere, exposed by a
  margin of at least ROBUST times the tolerance, or the best margin the grid offers if less; a
  formula mistake in float32 (every framework runs float32; not all run float64), a precision
  mistake in any dtype (normcheck.verify.exposure simulates each on each case);
- every dtype (an implementation that fails to run in one shows only there);
- every rank of input the grid has, and each kind of parameters (group norm's G = 1, G = C and
  between; layer norm over the last axis or several; training and evaluation; affine or not;
  running statistics or not), since code that assumes one shape or setting fails on the others;
- float32 input with a large mean, for the ops that subtract one (where a one-pass variance
  cancels: a mistake only an implementation's output reveals, see exposure.py).
A case covering more new items wins; among equals, the smaller input. Then each half-precision
case's float32 twin is added: a formula mistake is named on a half row only when the float32
row of its case confirms it (normcheck.diagnosis.consistency).

quick_cases.QUICK is what ``derive`` chose (benchmarks/derive_quick_profile.py prints it);
tests/verify/test_profiles.py proves the table still covers what the grid exposes.
"""

from __future__ import annotations

from dataclasses import replace

from normcheck.diagnosis.hypotheses import HYPOTHESES, NUMERIC
from normcheck.dtypes import HALF
from normcheck.names import DEFAULT_DTYPES, KIND_NAMES, OpName
from normcheck.ops import OPS
from normcheck.verify.exposure import exposure
from normcheck.verify.quick_cases import QuickCase

# formula mistakes must show in float32, which every framework runs
FORMULA_DTYPE = "float32"
_NUMERIC = {h.id for h in HYPOTHESES if h.family == NUMERIC}

ROBUST = 10.0  # a mistake counts as exposed by a case whose error is this many tolerances away


def features(op: str, case: QuickCase) -> set[str]:
    """What a case stands for besides the mistakes it exposes: its dtype, its rank, and the kind
    of its parameters (group norm's G at either end or between; mode; affine; running stats)."""
    p = case.params
    out = {f"dtype:{case.dtype}", f"ndim:{len(case.shape)}"}
    if op == "gn" and p.groups is not None and len(case.shape) > 1:
        c = case.shape[1]
        out.add("groups:" + ("1" if p.groups == 1 else "C" if p.groups == c else "between"))
    if op in ("ln", "rms") and p.normalized_ndim is not None:
        out.add("normalized:" + ("last" if p.normalized_ndim == 1 else "several"))
    if p.running_stats:
        out.add(f"mode:{p.mode}")
    out.add(f"affine:{p.affine}")
    out.add(f"running_stats:{p.running_stats}")
    if case.dtype == FORMULA_DTYPE and case.kind == "large_mean" and op != "rms":
        out.add("cancellation:float32 large_mean")  # where a one-pass variance shows
    return out


def items_of(case: QuickCase, exposed: dict[str, float]) -> dict[str, float]:
    """The mistakes ``exposed`` (id -> margin) that count for the cover: a precision mistake in
    any dtype, a formula mistake only in float32 (as ``id@float32``)."""
    out = {}
    for hyp, margin in exposed.items():
        if hyp in _NUMERIC:
            out[hyp] = margin
        elif case.dtype == FORMULA_DTYPE:
            out[f"{hyp}@{FORMULA_DTYPE}"] = margin
    return out


def grid_items(op: OpName) -> dict[QuickCase, set[str]]:
    """Every case of ``op``'s default grid (each dtype and input kind), with what it covers."""
    margins: dict[QuickCase, dict[str, float]] = {}
    for shape, params in OPS[op].default_cases():
        if OPS[op].validate(shape, params):
            continue
        for dtype in DEFAULT_DTYPES:
            for kind in KIND_NAMES:
                case = QuickCase(shape, params, dtype, kind)
                margins[case] = items_of(case, exposure(op, case))
    best: dict[str, float] = {}
    for found in margins.values():
        for item, m in found.items():
            best[item] = max(best.get(item, 0.0), m)
    need = {item: min(ROBUST, m) for item, m in best.items()}
    return {case: {i for i, m in found.items() if m >= need[i]} | features(op, case) for case, found in margins.items()}


def derive(op: OpName) -> list[QuickCase]:
    """The quick cases of ``op`` (see the module's docstring)."""
    items = grid_items(op)
    uncovered = set().union(*items.values())
    chosen: list[QuickCase] = []
    while uncovered:
        case = max(items, key=lambda c: (len(items[c] & uncovered), -_numel(c.shape)))
        chosen.append(case)
        uncovered -= items[case]
    for case in list(chosen):
        twin = replace(case, dtype="float32")
        if case.dtype in HALF and twin not in chosen:
            chosen.insert(chosen.index(case) + 1, twin)
    return chosen


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
