"""Planning and running: every planned case becomes one record, in order, with its metrics."""

from __future__ import annotations

import math

import pytest
from _require import require

from normcheck.bench.plan import BenchRequest, parse_passes, prepare, validate
from normcheck.bench.records import BenchCase, BenchResult
from normcheck.bench.run import planned_rows, run, with_baseline
from normcheck.bench.shapes import default_shapes, quick_shapes
from normcheck.bench.timer import TimerSettings
from normcheck.errors import UsageError

QUICK = TimerSettings(min_time=0.005, max_time=0.03, warmup=0.0)


def test_passes():
    assert parse_passes("both") == ("forward", "backward")
    assert parse_passes("backward") == ("backward",)
    with pytest.raises(UsageError, match="unknown pass"):
        parse_passes("sideways")


@pytest.mark.parametrize("op", ["bn", "ln", "in", "gn", "rms"])
def test_default_shapes_come_from_models_and_are_valid(op):
    from normcheck.ops import OPS

    for device in ("cpu", "cuda"):
        shapes = default_shapes(op, device)
        assert len(shapes) >= 3
        for s in shapes:
            assert s.model
            assert OPS[op].validate(s.shape, s.params) is None
    if op in ("ln", "rms"):
        hidden = [s.shape[1] for s in default_shapes(op, "cpu")]
        assert min(hidden) == 768 and max(hidden) == 8192


@pytest.mark.parametrize("op", ["bn", "ln", "in", "gn", "rms"])
def test_quick_shapes_are_the_smallest_and_largest_default_shapes(op):
    for device in ("cpu", "cuda"):
        every = default_shapes(op, device)
        quick = quick_shapes(op, device)
        sizes = [math.prod(s.shape) for s in every]
        assert [math.prod(s.shape) for s in quick] == [min(sizes), max(sizes)]
        assert all(s in every for s in quick)


def test_plan_rejects_bad_input():
    with pytest.raises(UsageError, match="unknown mode"):
        prepare(BenchRequest(frameworks="numpy", modes="jit"))
    with pytest.raises(UsageError, match="unknown profile"):
        validate(BenchRequest(frameworks="numpy", profile="fast"))
    with pytest.raises(UsageError, match="unknown framework"):
        prepare(BenchRequest(frameworks="mxnet"))
    with pytest.raises(UsageError, match="baseline"):
        prepare(BenchRequest(frameworks="numpy", baseline="torch"))
    with pytest.raises(UsageError, match="needs a 2"):
        prepare(BenchRequest(frameworks="numpy", ops="bn", shapes=("7",)))
    with pytest.raises(UsageError, match="no GPU"):
        prepare(BenchRequest(frameworks="numpy", device="cuda"))


def test_user_shapes_get_each_ops_params():
    plan = prepare(BenchRequest(frameworks="numpy", ops="gn,ln", shapes=("2,48,4,4",)))
    gn = plan.shapes["gn"][0]
    assert gn.params.groups == 24  # the largest divisor of 48 up to 32
    assert plan.shapes["ln"][0].params.normalized_ndim == 1


def test_run_numpy_makes_one_record_per_case_with_metrics():
    plan = prepare(BenchRequest(frameworks="numpy", ops="ln,gn", shapes=("4,32,4,4",), dtypes="float32,bfloat16"))
    report = run(plan, QUICK, [0])
    cases = [(r.case.op, r.case.dtype, r.case.pass_) for r in report.results]
    assert cases == [
        (op, dt, p) for op in ("ln", "gn") for dt in ("float32", "bfloat16") for p in ("forward", "backward")
    ]
    for r in report.results:
        if r.case.dtype == "bfloat16":
            assert r.status == "skip" and "bfloat16" in r.reason
            continue
        assert r.status == "ok", r.reason
        assert r.median > 0 and r.gbps > 0 and r.copy_gbps > 0
        assert r.case.framework == "numpy"
    assert planned_rows(plan) == len(report.results)
    assert report.env["versions"]["numpy"]
    assert report.settings["copy_bandwidth"]["gbps"] > 0
    assert not report.interrupted


def test_run_torch_rows_are_relative_to_the_baseline():
    require("torch")
    plan = prepare(BenchRequest(frameworks="torch,numpy", ops="rms", shapes=("64,128",), passes="forward"))
    report = run(plan, QUICK, [0])
    by_impl = {r.case.impl: r for r in report.results}
    assert by_impl["F.rms_norm"].speedup == pytest.approx(1.0)
    assert by_impl["numpy reference"].baseline_s == by_impl["F.rms_norm"].median
    assert by_impl["F.rms_norm"].threads == 1  # torch.set_num_threads(1), as the plan asked


def test_baseline_prefers_the_same_mode_then_eager():
    def r(fw: str, mode: str, median: float) -> BenchResult:
        c = BenchCase("ln", (4, 8), "k=1", "float32", fw, fw, "cpu", "forward", mode)
        return BenchResult(c, samples=(median,) * 3)

    rows = with_baseline(
        [r("torch", "eager", 2.0), r("torch", "torch.compile", 1.0), r("jax", "jax.jit", 0.5), r("jax", "eager", 4.0)],
        "torch",
    )
    assert [x.baseline_s for x in rows] == [2.0, 1.0, 2.0, 2.0]


def test_planned_rows_count_every_variant_of_every_mode():
    require("tensorflow")
    plan = prepare(BenchRequest(frameworks="tensorflow,numpy", ops="rms", shapes=("4,8",), modes="eager,compiled"))
    # Keras RMSNormalization and LayerNormalization(rms_scaling=True): eager, tf.function,
    # tf.function+XLA each; NumPy: eager once; two passes
    assert planned_rows(plan) == (3 + 3 + 1) * 2
