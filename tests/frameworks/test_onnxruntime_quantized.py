"""ONNX Runtime's norm with FP8-quantized output: LayerNormalization or RMSNormalization, then
QuantizeLinear to float8 (saturating) with a static, per-tensor or per-row scale computed in the
graph. It passes verify's quantized check in every format and scale, is planned for quantized
cases only, and bench times it."""

from __future__ import annotations

import numpy as np
import pytest
from _require import require

import normcheck
from normcheck.verify.records import ERROR, PASS, SKIP

SMALL = {"shapes": ["4,16", "2,3,24"], "kinds": "normal,large_mean,half_range", "jobs": 1}


@pytest.mark.parametrize("scale", ["row", "tensor", "static"])
@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_the_norm_and_quantizelinear_pass_every_format_and_scale(fmt, scale):
    require("onnxruntime")
    report = normcheck.check("rms,ln", framework="onnxruntime", quantize=fmt, scale=scale, **SMALL)
    assert report.ok and not report.counts[ERROR], [r.message for r in report.failing()][:3]
    impls = {r.case.impl for r in report.results}
    assert impls == {"onnx.RMSNormalization + QuantizeLinear", "onnx.LayerNormalization + QuantizeLinear"}
    checks = {r.check for r in report.results if r.status == PASS}
    assert checks == ({"quantized"} if scale == "static" else {"quantized", "scale"})


def test_it_is_planned_for_quantized_cases_only():
    require("onnxruntime")
    report = normcheck.check("rms", framework="onnxruntime", shapes=["4,16"], kinds="normal", jobs=1)
    assert report.ok and {r.case.impl for r in report.results} == {"onnx.RMSNormalization"}


def test_an_empty_case_is_a_skip_with_its_reason():
    require("onnxruntime")
    report = normcheck.check("rms", framework="onnxruntime", quantize="e4m3", shapes=["4,0"], kinds="normal", jobs=1)
    assert report.ok and {r.status for r in report.results} == {SKIP}
    assert "at least one row" in report.results[0].message


def test_its_values_are_fp8_of_the_norm_over_the_scale():
    """The graph's output, read back through ml_dtypes, is the round-to-nearest-even FP8 value of
    y / scale with the scale vLLM's rule gives (checked here directly, beside verify's check)."""
    require("onnxruntime")
    import ml_dtypes

    from normcheck.frameworks.onnxruntime.quantized import OrtQuantizedImplementation
    from normcheck.ops import OpParams
    from normcheck.ops.quantize import Quantization
    from normcheck.verify.inputs import make_problem

    params = OpParams(normalized_ndim=1, quant=Quantization("e4m3", "row"), affine=False)
    p = make_problem("rms", (3, 32), params, "float32", "normal", 1e-6)
    out = OrtQuantizedImplementation("rms").run(p, "contiguous", "cpu")
    x = p.x.astype(np.float32)
    y = x / np.sqrt(np.mean(x * x, axis=1, keepdims=True) + np.float32(1e-6))
    scale = np.maximum(np.abs(y).max(axis=1, keepdims=True) / np.float32(448), np.float32(1 / (448 * 512)))
    want = (y / scale).astype(ml_dtypes.float8_e4m3fn).astype(np.float64)
    assert out.dtypes["quantized"] == "float8_e4m3fn" and out.values["scale"].shape == (3, 1)
    np.testing.assert_allclose(out.values["scale"], scale, rtol=1e-6)
    assert np.mean(out.values["quantized"] == want) > 0.95  # a float32 rounding of y may move a value one step


def test_bench_times_it_forward():
    require("onnxruntime")
    from normcheck.bench.plan import BenchRequest, prepare
    from normcheck.bench.run import run
    from normcheck.bench.timer import TimerSettings

    plan = prepare(BenchRequest(ops="rms", frameworks="onnxruntime", quantize="e5m2", scale="tensor", shapes=("8,64",)))
    report = run(plan, TimerSettings(min_time=0.005, max_time=0.03, warmup=0.0), cpus=[0])
    rows = {r.case.pass_: r for r in report.results}
    assert rows["forward"].status == "ok" and rows["forward"].gbps > 0
    assert rows["backward"].status == "skip"
