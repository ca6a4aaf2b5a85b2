"""bench of the variants and the ops beyond the five plain ones: the fused residual add + norms
(ONNX Runtime's com.microsoft nodes and user code), adaLN and Weight Standardization (PyTorch's
compositions), an op variant (--variant) and an FP8-quantized output (--quantize) of user code:
planned, timed, their bytes counted, and the usage errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from _require import require

from normcheck.bench.metrics import model_bytes
from normcheck.bench.plan import BenchRequest, prepare, validate
from normcheck.bench.run import run
from normcheck.bench.shapes import default_shapes, quick_shapes
from normcheck.bench.timer import TimerSettings
from normcheck.errors import UsageError
from normcheck.ops import OPS, OpParams
from normcheck.ops.quantize import Quantization

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
QUICK = TimerSettings(min_time=0.005, max_time=0.03, warmup=0.0)
NEW_OPS = ["add_rms", "add_ln", "adaln", "ws", "ws_gn"]


def _run(**fields):
    return run(prepare(BenchRequest(**fields)), QUICK, cpus=[0])


@pytest.mark.parametrize("op", NEW_OPS)
def test_default_shapes_come_from_models_and_are_valid(op):
    for device in ("cpu", "cuda"):
        shapes = default_shapes(op, device)
        assert len(shapes) >= 3 and len(quick_shapes(op, device)) == 2
        for s in shapes:
            assert s.model and OPS[op].validate(s.shape, s.params) is None


@pytest.mark.parametrize("op", ["adaln", "ws", "ws_gn"])
def test_torch_times_its_compositions_forward_and_backward(op):
    require("torch")
    shape = {"adaln": "2,8,32", "ws": "1,8,6,6", "ws_gn": "1,8,6,6"}[op]
    report = _run(ops=op, frameworks="torch", shapes=(shape,))
    assert [(r.case.pass_, r.status) for r in report.results] == [("forward", "ok"), ("backward", "ok")]
    assert all(r.median > 0 and r.gbps and r.gbps > 0 for r in report.results)


def test_the_fused_add_norms_of_onnxruntime_and_of_user_code():
    require("torch")
    require("onnxruntime")
    report = _run(
        ops="add_rms",
        frameworks="torch,onnxruntime",
        impl=f"{FIXTURES / 'llm_norms.py'}:fused_add_rms_norm",
        shapes=("16,64",),
        dtypes="float32,float16",
    )
    rows = {(r.case.framework, r.case.dtype, r.case.pass_): r for r in report.results}
    for dtype in ("float32", "float16"):
        assert rows["user", dtype, "forward"].status == "ok"
        assert rows["user", dtype, "backward"].status == "ok"  # gradients of x, residual and weight
        assert rows["onnxruntime", dtype, "forward"].status == "ok"
        assert rows["onnxruntime", dtype, "backward"].status == "skip"  # inference only


def test_a_variant_times_only_the_implementations_that_compute_it():
    require("torch")
    report = _run(ops="ln", frameworks="torch", variant="nobias", shapes=("16,64",), passes="forward")
    assert {r.case.impl for r in report.results} == {"F.layer_norm", "nn.LayerNorm"}
    assert all(r.status == "ok" and "nobias" in r.case.params for r in report.results)
    with pytest.raises(UsageError, match="no framework timed has rms with the gemma variant"):
        prepare(BenchRequest(ops="rms", frameworks="torch", variant="gemma"))
    gemma = _run(
        ops="rms",
        frameworks="torch",
        variant="gemma",
        impl=f"{FIXTURES / 'llm_norms.py'}:GemmaRMSNorm",
        shapes=("8,32",),
    )
    assert {(r.case.framework, r.status) for r in gemma.results} == {("user", "ok")}


def test_an_fp8_output_is_timed_forward_up_to_what_the_code_returns():
    require("torch")
    impl = f"{FIXTURES / 'fp8_norms.py'}:rms_norm_fp8"
    report = _run(ops="rms", frameworks="torch", quantize="e4m3", impl=impl, shapes=("8,32",))
    status = {r.case.pass_: r for r in report.results}
    assert {r.case.framework for r in report.results} == {"user"}  # torch has no FP8 output built in
    assert status["forward"].status == "ok" and "fp8 e4m3 row" in status["forward"].case.params
    assert status["backward"].status == "skip" and "no gradient" in status["backward"].reason


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ops": "add_rms", "frameworks": "torch"}, "onnxruntime has"),
        ({"ops": "adaln", "frameworks": "numpy"}, "torch has"),
        ({"ops": "bn", "variant": "gemma"}, "gemma"),
        ({"ops": "rms", "quantize": "e4m3", "frameworks": "torch"}, "onnxruntime has"),
        ({"ops": "rms", "scale": "row"}, "give --quantize too"),
        ({"ops": "gn", "quantize": "e4m3", "impl": "x.py:f"}, "no FP8-quantized form"),
        ({"ops": "rms", "quantize": "e3m4", "impl": "x.py:f"}, "unknown FP8 format"),
    ],
)
def test_usage_errors(fields, message):
    with pytest.raises(UsageError, match=message):
        validate(BenchRequest(**fields))
        prepare(BenchRequest(**fields))


def test_bytes_of_the_fused_quantized_and_convolution_cases():
    rows = 512 * 4  # float32
    fused = model_bytes("add_rms", (512, 1024), OpParams(normalized_ndim=1), "float32", "forward")
    assert fused.total == 4 * 512 * 1024 * 4 + 1024 * 4  # x, residual in; y, x + residual out; weight
    quant = OpParams(normalized_ndim=1, quant=Quantization("e4m3"))
    fp8 = model_bytes("rms", (512, 1024), quant, "float32", "forward")
    assert fp8.total == 512 * 1024 * 4 + 512 * 1024 + 1024 * 4 + rows  # x in, one byte out, weight, row scales
    conv = OpParams(conv=(16, 3, 1))
    ws = model_bytes("ws", (2, 8, 10, 10), conv, "float32", "forward")
    x, y, w = 2 * 8 * 100 * 4, 2 * 16 * 100 * 4, 16 * 8 * 9 * 4
    assert ws.total == x + y + w + 16 * 4  # the convolution's bias
    gn = model_bytes("ws_gn", (2, 8, 10, 10), OpParams(conv=(16, 3, 1), groups=4), "float32", "backward")
    assert gn.total == 2 * x + y + 2 * w + 2 * 2 * 16 * 4
    assert math.isclose(
        model_bytes("adaln", (2, 256, 768), OpParams(), "float32", "forward").total,
        2 * 2 * 256 * 768 * 4 + 2 * 2 * 768 * 4,
    )


def test_a_variant_of_your_code_needs_no_op_where_its_name_gives_one():
    """As verify: with --impl and no --op, the op the implementation's name gives is checked once
    loaded (GemmaRMSNorm is rms), so validate does not refuse it."""
    validate(BenchRequest(variant="gemma", impl=f"{FIXTURES / 'llm_norms.py'}:GemmaRMSNorm"))
    with pytest.raises(UsageError, match="batch norm has no variant 'gemma'"):  # the five default ops
        validate(BenchRequest(variant="gemma"))
