"""Records as pandas tables: the grouping every summary uses, and Report.frame() for users."""

from __future__ import annotations

from normcheck.ops import OpParams
from normcheck.report.frames import records_frame, status_counts
from normcheck.verify.records import Case, CheckResult
from normcheck.verify.request import Report


def _row(op: str, impl: str, dtype: str, status: str, check: str = "forward") -> CheckResult:
    case = Case(op, "torch", impl, (2, 4), OpParams(groups=2), dtype, "normal")
    return CheckResult(case, check, status, message="m" if status != "pass" else "")


ROWS = [
    _row("gn", "nn.GroupNorm", "float32", "pass"),
    _row("gn", "F.group_norm", "float32", "fail"),
    _row("gn", "nn.GroupNorm", "float32", "known", "grad_input"),
    _row("gn", "nn.GroupNorm", "float16", "skip"),
    _row("bn", "F.batch_norm", "float32", "error"),
]


def test_status_counts_groups_in_order_of_first_appearance_with_totals():
    counts = status_counts([r.as_dict() for r in ROWS], ("op", "impl"))
    assert counts.to_dict("records") == [
        {"op": "gn", "impl": "nn.GroupNorm", "checks": 3, "pass": 1, "fail": 0, "known": 1, "error": 0, "skip": 1},
        {"op": "gn", "impl": "F.group_norm", "checks": 1, "pass": 0, "fail": 1, "known": 0, "error": 0, "skip": 0},
        {"op": "bn", "impl": "F.batch_norm", "checks": 1, "pass": 0, "fail": 0, "known": 0, "error": 1, "skip": 0},
    ]


def test_status_counts_of_nothing_has_the_columns():
    assert list(status_counts([], ("op",)).columns) == ["op", "checks", "pass", "fail", "known", "error", "skip"]


def test_records_frame_has_one_row_per_check_in_report_order():
    frame = records_frame([r.as_dict() for r in ROWS])
    assert list(frame["status"]) == ["pass", "fail", "known", "skip", "error"]
    assert list(frame["check"])[:3] == ["forward", "forward", "grad_input"]


def test_a_report_gives_its_frame_and_counts():
    report = Report(ROWS, {"pass": 1})
    assert len(report.frame()) == 5
    by_dtype = report.counts_by("dtype").set_index("dtype")
    assert by_dtype.loc["float32", "checks"] == 4 and by_dtype.loc["float16", "skip"] == 1
