"""Weight Standardization in the TensorFlow forms: a function ``fn(x, filters, bias, padding=p,
eps=e)`` on NHWC x and a (kh, kw, in, out) kernel, and Keras Conv2D subclasses constructed as
Conv2D is; the fixtures of fixtures/tf_ws.py through verify: the correct ones pass (ws, and ws_gn
with normcheck's group norm after them), each buggy one fails with the diagnosis that names its
mistake, as tests/frameworks/test_ws_torch.py holds the PyTorch fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from _require import require

import normcheck
from normcheck.verify.records import FAIL, SKIP
from normcheck.verify.request import Report

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "tf_ws.py"
SMALL = ["2,3,6,6"]


def _check(op: str, name: str, **options) -> Report:
    require("tensorflow")
    framework = None if name[0].isupper() else "tensorflow"
    return normcheck.check(op, f"{FIXTURES}:{name}", framework=framework, jobs=1, **options)


def _causes(report: Report) -> set[str | None]:
    return {r.diagnosis.hypothesis if r.diagnosis else None for r in report.results if r.status == FAIL}


@pytest.mark.parametrize("name", ["std_conv2d", "std_conv2d_graph", "StdConv2D"])
def test_correct_code_passes_ws_and_ws_gn_with_every_check(name):
    report = _check("ws", name, dtypes="float32,float64", shapes=SMALL)
    assert report.ok and report.counts["pass"] > 0, [r.message for r in report.failing()][:3]
    assert not report.counts["error"] and not report.counts["skip"]
    assert {r.check for r in report.results} == {"forward", "grad_input", "grad_weight", "grad_bias"}
    assert {r.case.layout for r in report.results} == {"channels_last"}
    report = _check("ws_gn", name, dtypes="float32", shapes=SMALL, groups=3)
    assert report.ok, [r.message for r in report.failing()][:3]
    assert {"grad_gn_weight", "grad_gn_bias", "grad_weight"} <= {r.check for r in report.results}


@pytest.mark.slow
def test_the_default_cases_pass_in_every_dtype_where_the_convolution_computes_in_float32():
    """float16 too for the plain function; bfloat16 for the one computing its convolution in
    float32 (TensorFlow sums a bfloat16 convolution's kernel gradient in bfloat16 on the CPU)."""
    assert _check("ws", "std_conv2d_float32", dtypes="bfloat16").ok
    assert _check("ws", "std_conv2d", dtypes="float16").ok


def test_keras_pads_valid_or_same_only():
    report = _check("ws", "StdConv2D", dtypes="float32", shapes=["2,3,6,6"], kinds="normal")
    assert report.ok
    from normcheck.frameworks.tensorflow.ws import keras_padding

    assert [keras_padding(k, p) for k, p in ((3, 1), (1, 0), (3, 0), (3, 2), (4, 2))] == [
        "same",
        "valid",
        "valid",
        None,
        None,
    ]


BUGGY = [
    ("std_conv2d_per_input_channel", "ws_axes"),
    ("std_conv2d_detached", "ws_grad_cut_stats"),
    ("StdConv2DUnbiased", "ws_unbiased_variance"),
    ("StdConv2DWholeKernel", "ws_axes"),
]


@pytest.mark.parametrize(("name", "cause"), BUGGY, ids=[b[0] for b in BUGGY])
def test_buggy_code_fails_with_its_diagnosis(name, cause):
    report = _check("ws", name, dtypes="float32", kinds="normal,tiny_scale", shapes=["2,5,6,6"])
    assert not report.ok
    assert _causes(report) == {cause}
    if cause == "ws_grad_cut_stats":  # the forward is right, the raw kernel's gradient is not
        assert {r.check for r in report.results if r.status == FAIL} == {"grad_weight"}


def test_code_without_eps_or_padding_gets_skip_rows_saying_so(tmp_path):
    path = tmp_path / "no_eps.py"
    path.write_text(
        "import tensorflow as tf\n\n"
        "def std_conv(x, filters, bias=None):\n"
        "    mean, var = tf.nn.moments(filters, axes=[0, 1, 2], keepdims=True)\n"
        "    y = tf.nn.conv2d(x, (filters - mean) * tf.math.rsqrt(var + 1e-6), 1, 'VALID')\n"
        "    return y if bias is None else y + bias\n"
    )
    report = normcheck.check("ws", f"{path}:std_conv", framework="tensorflow", dtypes="float32", jobs=1)
    assert report.ok and report.counts["pass"] > 0
    reasons = {r.message.split(":")[0] for r in report.results if r.status == SKIP}
    assert reasons == {"it takes no padding parameter", "it takes no eps"}


def test_a_function_making_its_own_variables_is_an_error_row_saying_so(tmp_path):
    path = tmp_path / "own.py"
    path.write_text(
        "import tensorflow as tf\n\n"
        "def std_conv(x, filters, bias=None, padding=0, eps=1e-6):\n"
        "    scale = tf.Variable(1.0, name='scale')\n"
        "    return tf.nn.conv2d(x, filters * scale, 1, 'VALID')\n"
    )
    report = normcheck.check("ws", f"{path}:std_conv", framework="tensorflow", dtypes="float32", shapes=SMALL, jobs=1)
    errors = [r for r in report.results if r.status == "error"]
    assert errors and all("creates its own variables" in r.message for r in errors)
