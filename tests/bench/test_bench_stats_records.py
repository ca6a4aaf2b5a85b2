"""Statistics derived from samples, the flat rows, and reading a JSON run back."""

from __future__ import annotations

import json

import pytest

from normcheck.bench.load import load_report, result_from_row
from normcheck.bench.records import OK, SKIP, BenchCase, BenchReport, BenchResult
from normcheck.bench.stats import NOISY_IQR, quantile, relative_iqr
from normcheck.errors import UsageError
from normcheck.report.bench_json import render_bench_json


def case(**kw) -> BenchCase:
    base = dict(
        op="gn",
        shape=(2, 64, 8, 8),
        params="G=32",
        dtype="float32",
        framework="torch",
        impl="F.group_norm",
        device="cpu",
        pass_="forward",
        mode="eager",
    )
    base.update(kw)
    return BenchCase(**base)


def test_quantiles_follow_numpy_linear_rule():
    samples = [4.0, 1.0, 3.0, 2.0, 5.0]
    assert quantile(samples, 0.5) == 3.0
    assert quantile(samples, 0.2) == pytest.approx(1.8)
    assert relative_iqr(samples) == pytest.approx(2.0 / 3.0)


def test_statistics_and_metrics_of_a_result():
    r = BenchResult(
        case(), samples=(1e-3, 1.1e-3, 0.9e-3, 1e-3, 1e-3), bytes_moved=2_000_000, copy_gbps=4.0, baseline_s=2e-3
    )
    assert r.median == pytest.approx(1e-3)
    assert r.gbps == pytest.approx(2.0)
    assert r.pct_copy == pytest.approx(50.0)
    assert r.speedup == pytest.approx(2.0)
    assert not r.noisy


def test_noisy_when_iqr_over_median_exceeds_threshold():
    spread = (1.0, 1.0 + 3 * NOISY_IQR, 1.0, 1.0 + 3 * NOISY_IQR)
    assert BenchResult(case(), samples=spread).noisy


def test_unmeasured_rows_have_no_statistics():
    r = BenchResult(case(), status=SKIP, reason="no kernel")
    assert r.median is None and r.gbps is None and not r.noisy
    row = r.as_dict()
    assert row["status"] == SKIP and row["median_s"] is None


def test_json_round_trip_keeps_samples_and_identity(tmp_path):
    results = [
        BenchResult(
            case(),
            samples=(1e-3, 2e-3, 3e-3),
            block=4,
            timer="perf_counter",
            bytes_moved=10,
            peak_memory=123,
            notes=("a", "b"),
        ),
        BenchResult(
            case(pass_="backward", framework="onnxruntime", impl="onnx.GroupNormalization"),
            status=SKIP,
            reason="inference only",
        ),
    ]
    report = BenchReport(env={"cpu": "x"}, settings={"threads": 1}, results=results)
    path = tmp_path / "run.json"
    path.write_text(render_bench_json(report))
    back = load_report(path)
    assert [r.case for r in back.results] == [r.case for r in results]
    assert back.results[0].samples == results[0].samples
    assert back.results[0].median == results[0].median
    assert back.results[0].notes == ("a", "b")
    assert back.results[1].status == SKIP and back.results[1].reason == "inference only"
    assert back.env == {"cpu": "x"}


def test_load_rejects_what_is_not_a_bench_json(tmp_path):
    bad = tmp_path / "verify.json"
    bad.write_text(json.dumps({"normcheck": "0.1", "results": []}))
    with pytest.raises(UsageError, match="not the JSON of a normcheck bench run"):
        load_report(bad)
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{")
    with pytest.raises(UsageError, match="not JSON"):
        load_report(garbage)


def test_row_with_unknown_status_is_rejected():
    row = BenchResult(case(), samples=(1.0,)).as_dict(samples=True)
    row["status"] = "great"
    with pytest.raises(ValueError):
        result_from_row(row)
    assert result_from_row({**row, "status": OK}).samples == (1.0,)
