"""The records every command produces and every renderer consumes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from normcheck.names import CONTIGUOUS, DtypeName, InputKind, Layout, OpName, Status
from normcheck.names import STATUSES as STATUSES
from normcheck.ops import OpParams, fmt_shape
from normcheck.ops.adaptive_layer_norm import check_label

PASS: Final = "pass"
FAIL: Final = "fail"
KNOWN: Final = "known"  # a failure matching a documented defect of a built-in framework
ERROR: Final = "error"
SKIP: Final = "skip"
RUN = "run"  # the check name of a row that stands for a whole case (an error or a skip)


@dataclass(frozen=True)
class Case:
    """One implementation run on one set of inputs."""

    op: OpName | Literal["-"]  # "-": the row of an implementation that could not be loaded
    framework: str
    impl: str
    shape: tuple[int, ...]
    params: OpParams
    dtype: DtypeName | Literal["-"]
    kind: InputKind | Literal["-"]
    layout: Layout = CONTIGUOUS
    device: str = "cpu"


@dataclass(frozen=True)
class Tolerance:
    """Allowed error: |actual - expected| <= atol + rtol * |expected| elementwise.

    ``atol`` already includes the conditioning allowance: ``floor_atol`` (dtype table or
    user) plus CONDITIONING_FACTOR times ``witness_err``, the largest error of a correct
    two-pass implementation in the same dtype on the same input, never below the rounding of
    the terms it adds up (eps times the largest; see verify.tolerance.TERM_ROUNDING).
    """

    rtol: float
    atol: float
    floor_atol: float
    witness_err: float
    source: str  # "dtype" or "user"

    def describe(self) -> str:
        text = f"rtol={self.rtol:.1e} atol={self.atol:.1e}"
        return text + " (cond)" if self.atol > self.floor_atol else text


@dataclass(frozen=True)
class Comparison:
    max_abs_err: float
    max_rel_err: float
    mismatched: int
    numel: int
    worst_index: tuple[int, ...] | None
    worst_got: float | None = None  # the implementation's value at worst_index
    worst_expected: float | None = None  # the reference's value there

    @property
    def mismatched_pct(self) -> float:
        return 100.0 * self.mismatched / self.numel if self.numel else 0.0


@dataclass(frozen=True)
class Diagnosis:
    """Why a check failed: the known mistake that reproduces it (``hypothesis`` None: unknown).

    ``family`` is "formula" (the math is wrong), "numeric" (the math is right, the arithmetic
    loses it) or "" when unknown; ``ambiguous``: ``also`` fits as well, so neither is certain.
    ``fallback``: the numeric diagnosis (or unknown) a half-precision row gets when its formula
    cause is not confirmed by the full-precision rows of the case; reconciled away before a
    report is written.
    """

    hypothesis: str | None
    cause: str
    evidence: str
    scope: str = "case"  # "case": explains every failing check of the case; "check": this one only
    also: tuple[str, ...] = ()  # other hypotheses that explain it as well
    fix: str = ""
    family: str = ""
    ambiguous: bool = False
    fallback: Diagnosis | None = field(default=None, compare=False, repr=False)

    @property
    def summary(self) -> str:
        head = self.cause if self.hypothesis else "cause unknown"
        text = f"{head} ({self.evidence})"
        return f"{text}; fix: {self.fix}" if self.fix else text

    def as_dict(self) -> dict[str, Any]:
        return {
            "hypothesis": self.hypothesis,
            "cause": self.cause,
            "evidence": self.evidence,
            "scope": self.scope,
            "also": list(self.also),
            "fix": self.fix,
            "family": self.family,
            "ambiguous": self.ambiguous,
            "summary": self.summary,
        }


@dataclass(frozen=True)
class CheckResult:
    case: Case
    check: str
    status: Status
    comparison: Comparison | None = None
    tolerance: Tolerance | None = None
    message: str = ""
    against: str | None = None  # "framework:impl" compared with directly, instead of the reference
    diagnosis: Diagnosis | None = None

    def as_dict(self) -> dict[str, Any]:
        """A flat record: the one shape every renderer reads."""
        c, cmp, tol = self.case, self.comparison, self.tolerance
        return {
            "op": c.op,
            "framework": c.framework,
            "impl": c.impl,
            "device": c.device,
            "shape": fmt_shape(c.shape),
            "params": c.params.label(),
            "dtype": c.dtype,
            "layout": c.layout,
            "input": c.kind,
            "check": check_label(c.op, self.check),
            "against": self.against,
            "status": self.status,
            "max_abs_err": _finite(cmp.max_abs_err) if cmp else None,
            "max_rel_err": _finite(cmp.max_rel_err) if cmp else None,
            "mismatched_pct": round(cmp.mismatched_pct, 4) if cmp else None,
            "worst_index": list(cmp.worst_index) if cmp and cmp.worst_index is not None else None,
            "worst_got": _finite(cmp.worst_got) if cmp and cmp.worst_got is not None else None,
            "worst_expected": _finite(cmp.worst_expected) if cmp and cmp.worst_expected is not None else None,
            "tolerance": tol.describe() if tol else None,
            "rtol": tol.rtol if tol else None,
            "atol": tol.atol if tol else None,
            "message": self.message,
            "diagnosis": self.diagnosis.as_dict() if self.diagnosis else None,
        }


def _finite(v: float) -> float | str:
    """JSON has no inf or nan: those travel as strings."""
    return v if math.isfinite(v) else str(v)


def summarize(results: list[CheckResult]) -> dict[str, int]:
    counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
    for r in results:
        counts[r.status] += 1
    return counts


def load_error_row(op: OpName | Literal["-"], impl: str, message: str, framework: str = "user") -> CheckResult:
    """The one row that stands for every case of an implementation that could not be loaded."""
    return CheckResult(Case(op, framework, impl, (), OpParams(), "-", "-"), RUN, ERROR, message=message)
