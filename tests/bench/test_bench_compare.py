"""The regression gate: slower past the threshold and past both runs' spread, nothing else."""

from __future__ import annotations

import pytest

from normcheck.bench.compare import compare, parse_threshold
from normcheck.bench.records import SKIP, BenchCase, BenchResult
from normcheck.errors import UsageError


def result(median: float, spread: float = 0.01, impl: str = "F.group_norm", status: str = "ok") -> BenchResult:
    c = BenchCase("gn", (2, 64, 8, 8), "G=32", "float32", "torch", impl, "cpu", "forward", "eager")
    samples = tuple(median * (1 + spread * k) for k in (-2, -1, 0, 1, 2))
    return BenchResult(c, status=status, samples=samples if status == "ok" else ())


def test_threshold_parsing():
    assert parse_threshold("10%") == pytest.approx(0.10)
    assert parse_threshold("0.25") == pytest.approx(0.25)
    with pytest.raises(UsageError):
        parse_threshold("ten")
    with pytest.raises(UsageError):
        parse_threshold("-5%")


def test_clear_slowdown_is_a_regression():
    cmp = compare([result(1.0)], [result(1.3)], 0.10)
    assert len(cmp.slower) == 1
    assert cmp.slower[0].ratio == pytest.approx(1.3)


def test_within_threshold_is_not_a_regression():
    cmp = compare([result(1.0)], [result(1.05)], 0.10)
    assert not cmp.slower and cmp.unchanged == 1


def test_slowdown_inside_the_measured_spread_is_not_a_regression():
    # 20% slower on the median, but the samples spread by +-40%: the runs overlap
    cmp = compare([result(1.0, spread=0.2)], [result(1.2, spread=0.2)], 0.10)
    assert not cmp.slower


def test_speedup_and_missing_cases_are_reported_not_failed():
    old = [result(1.0), result(1.0, impl="nn.GroupNorm")]
    cmp = compare(old, [result(0.5)], 0.10)
    assert not cmp.slower
    assert len(cmp.faster) == 1
    assert [r.case.impl for r in cmp.only_old] == ["nn.GroupNorm"]


def test_skipped_rows_are_not_compared():
    cmp = compare([result(1.0)], [result(0, status=SKIP)], 0.10)
    assert not cmp.slower and len(cmp.only_old) == 1


def test_environment_differences_are_named():
    cmp = compare([result(1.0)], [result(1.0)], 0.1, {"cpu": "A", "threads": 1}, {"cpu": "B", "threads": 1})
    assert cmp.env_differences == ["cpu: 'A' then, 'B' now"]
