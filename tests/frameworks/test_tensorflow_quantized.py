"""TensorFlow functions and Keras layers with FP8-quantized output (``--quantize``): the fixtures of
fixtures/tf_fp8_norms.py, called as the PyTorch forms call fixtures/fp8_norms.py (``fn(x,
normalized_shape, weight[, bias], eps[, scale])``, ``layer(x[, scale])``) -> (q, scale), each
correct one passing the "quantized" and "scale" checks, each buggy one failing with the diagnosis
that names its mistake (one verify run for them all); what the forms read back; and the bench."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from _require import require

tf = require("tensorflow")

from typer.testing import CliRunner

import normcheck
from fixtures import tf_fp8_norms
from normcheck.bench.records import BACKWARD, FORWARD
from normcheck.frameworks import bench_module
from normcheck.frameworks.base import Unsupported
from normcheck.frameworks.tensorflow import forms, quantized
from normcheck.ops import OpParams
from normcheck.ops.quantize import STATIC, Quantization, Rounding, values_accepted
from normcheck.problem import Problem
from normcheck.reference import reference
from normcheck.verify.quantized import quantized_problem

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "tf_fp8_norms.py"

# (impl, op, format, scale)
CORRECT = [
    ("rms_norm_fp8", "rms", "e4m3", "row"),
    ("rms_norm_fp8_compiled", "rms", "e4m3", "row"),
    ("rms_norm_fp8_e5m2", "rms", "e5m2", "row"),
    ("rms_norm_fp8_per_tensor", "rms", "e4m3", "tensor"),
    ("rms_norm_fp8_static", "rms", "e4m3", "static"),
    ("layer_norm_fp8", "ln", "e4m3", "row"),
    ("RMSNormFP8", "rms", "e4m3", "row"),
    ("RMSNormFP8", "rms", "e4m3", "static"),
    ("LayerNormFP8", "ln", "e4m3", "static"),
]
# (impl, op, format, scale, the hypothesis its failures must name)
BUGGY = [
    ("rms_norm_fp8_static_scale_roundtrip", "rms", "e4m3", "static", "scale_one_ulp"),
    ("rms_norm_fp8_static_e5m2_no_clip", "rms", "e5m2", "static", "no_saturation"),
    ("rms_norm_fp8_tensor_scale", "rms", "e4m3", "row", "tensor_scale"),
    ("rms_norm_fp8_fnuz_max", "rms", "e4m3", "row", "fp8_max_240"),
    ("rms_norm_fp8_amax_of_input", "rms", "e4m3", "row", "amax_of_input"),
    ("RMSNormFP8FnuzMax", "rms", "e4m3", "row", "fp8_max_240"),
]
# returns of the wrong kind, each an error row whose message says what a quantized norm returns
MALFORMED = """
def q_alone(x, normalized_shape, weight, eps):
    return rms_norm_fp8(x, normalized_shape, weight, eps)[0]


def numpy_q(x, normalized_shape, weight, eps):
    q, scale = rms_norm_fp8(x, normalized_shape, weight, eps)
    return q.numpy(), scale


def string_scale(x, normalized_shape, weight, eps):
    return rms_norm_fp8(x, normalized_shape, weight, eps)[0], "scale"
"""
MALFORMED_NAMES = ("q_alone", "numpy_q", "string_scale")


def _key(name: str, scale: str) -> str:
    return f"{name} {scale}"


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> dict[str, list[dict]]:
    """Every fixture checked in one verify run: its rows by implementation and scale (both call styles)."""
    tmp = tmp_path_factory.mktemp("tf_fp8")
    module = tmp / "tf_fp8_more.py"
    module.write_text(FIXTURES.read_text() + "\n" + MALFORMED)
    lines = [
        'dtypes = ["float32", "bfloat16"]',
        'inputs = ["normal", "half_range"]',
        "shapes = [[4, 16], [2, 5, 33]]",
        'framework = "tensorflow"',
    ]
    checks = [(n, op, fmt, s) for n, op, fmt, s, *_ in CORRECT + BUGGY]
    checks += [(n, "rms", "e4m3", "row") for n in MALFORMED_NAMES]
    for name, op, fmt, scale in checks:
        lines += ["[[check]]", f'op = "{op}"', f'impl = "{module}:{name}"']
        lines += [f'quantize = "{fmt}"', f'scale = "{scale}"']
    config = tmp / "normcheck.toml"
    config.write_text("\n".join(lines) + "\n")
    from normcheck.cli import app

    result = CliRunner().invoke(app, ["verify", "--config", str(config), "--format", "json"], catch_exceptions=False)
    assert result.exit_code == 1, result.output  # the buggy ones fail
    by_check: dict[str, list[dict]] = {}
    for row in json.loads(result.stdout)["results"]:
        name = row["impl"].removesuffix(" (defaults)")
        by_check.setdefault(_key(name, row["params"].rpartition(" ")[2]), []).append(row)
    return by_check


@pytest.mark.parametrize(("name", "op", "fmt", "scale"), CORRECT, ids=[_key(c[0], c[3]) for c in CORRECT])
def test_correct_fixtures_pass(records, name, op, fmt, scale):
    rows = records[_key(name, scale)]
    bad = [(r["check"], r["message"]) for r in rows if r["status"] in ("fail", "error")]
    assert not bad, bad[:3]
    assert {r["check"] for r in rows if r["status"] == "pass"} == {"quantized", "scale"}
    assert all(r["status"] == "skip" for r in rows if r["check"].startswith("grad_"))
    assert all(r["params"].endswith(f"fp8 {fmt} {scale}") for r in rows)
    assert {r["impl"].endswith("(defaults)") for r in rows} == {True, False}  # both call styles ran


@pytest.mark.parametrize(("name", "op", "fmt", "scale", "hypothesis"), BUGGY, ids=[b[0] for b in BUGGY])
def test_buggy_fixtures_fail_with_their_diagnosis(records, name, op, fmt, scale, hypothesis):
    rows = records[_key(name, scale)]
    failing = [r for r in rows if r["status"] == "fail"]
    assert failing
    for r in failing:
        d = r["diagnosis"]
        assert d is not None and d["hypothesis"] == hypothesis, (r["check"], r["message"], d)
        assert not d["ambiguous"] and d["fix"]
    assert not [r for r in rows if r["status"] == "error"]


@pytest.mark.parametrize("name", MALFORMED_NAMES)
def test_malformed_returns_are_error_rows_that_say_what_to_return(records, name):
    rows = records[_key(name, "row")]
    errors = [r["message"] for r in rows if r["status"] == "error"]
    assert errors and all("returns (q, scale)" in m for m in errors), errors[:2]
    assert not [r for r in rows if r["status"] in ("pass", "fail")]


def _problem(op: str, scale: str, dtype: str = "float32") -> Problem:
    """A (3, 8) case of ``op`` quantized to e4m3 with ``scale``; a static one given the scale verify gives."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 8))
    plain = Problem(
        op=op,
        shape=x.shape,
        params=OpParams(normalized_ndim=1),
        dtype=dtype,
        kind="normal",
        eps=1e-6,
        momentum=0.1,
        x=x,
        dy=np.zeros_like(x),
        weight=np.linspace(0.5, 1.5, 8),
        bias=np.linspace(-0.25, 0.25, 8) if op == "ln" else None,
    )
    return quantized_problem(plain, OpParams(normalized_ndim=1, quant=Quantization("e4m3", scale)))


def test_a_function_its_names_cannot_bind_takes_the_quantized_cases_by_position():
    """``fn(x, normalized_shape, weight, eps, scale)``: 'weight' and 'scale' both name a weight, so
    normcheck.user cannot bind it by name; the form calls it by position, on quantized cases only.
    q comes back as float64 with the dtype name float8_e4m3fn, each value the FP8 rounding of
    y / scale, and the scale exactly the one given."""
    fn = tf_fp8_norms.rms_norm_fp8_static
    impl = forms.build("tf_function", "rms", fn, "rms_norm_fp8_static", omit_defaults=False)
    assert isinstance(impl, quantized.QuantizedOnlyFunction)
    p = _problem("rms", STATIC)
    out = impl.run(p, "contiguous", "cpu")
    q, scale = out.values["quantized"], out.values["scale"]
    assert out.dtypes["quantized"] == "float8_e4m3fn" and out.dtypes["scale"] == "float32"
    assert q.dtype == np.float64 and q.shape == p.shape and float(scale) == float(p.quant_scale)
    y = reference(replace(p, params=OpParams(normalized_ndim=1), quant_scale=None))["forward"]
    ok = values_accepted(q, y, 1e-5 + 1.3e-6 * np.abs(y), scale, Rounding(p.params.quant.fmt), exact_format=True)
    assert ok.all()


def test_the_keras_layer_gets_the_static_scale_in_float32():
    """Keras casts every floating tensor argument to a layer's dtype: the form turns that off for
    the call, so a bfloat16 layer's static scale stays the float32 one given (and comes back so)."""
    impl = forms.build("keras_layer", "rms", tf_fp8_norms.RMSNormFP8, "RMSNormFP8", omit_defaults=False)
    p = _problem("rms", STATIC, dtype="bfloat16")
    bound = impl.bind(p, "contiguous", "cpu")
    assert bound.quantized is not None and bound.layer is not None
    out = bound.quantized(tf.cast(tf.constant(p.x), tf.bfloat16))
    assert out.dtypes["scale"] == "float32" and float(out.values["scale"]) == float(p.quant_scale)
    assert bound.layer.autocast  # restored after the call


@pytest.mark.parametrize("variant", ["eager", "tf.function+XLA"])
def test_bench_times_the_forward_and_refuses_the_backward(variant):
    target = bench_module("tensorflow")
    impl = forms.build("keras_layer", "ln", tf_fp8_norms.LayerNormFP8, "LayerNormFP8", omit_defaults=False)
    p = _problem("ln", "row")
    t = target.build(impl, p, FORWARD, variant, "cpu")
    q, scale = t.call()
    assert q.dtype == tf.dtypes.experimental.float8_e4m3fn and tuple(scale.shape) == (3, 1)
    with pytest.raises(Unsupported, match="no gradient"):
        target.build(impl, p, BACKWARD, variant, "cpu")


def test_without_quantize_such_a_function_is_skip_rows_saying_why():
    report = normcheck.check(
        "rms",
        f"{FIXTURES}:rms_norm_fp8_static",
        framework="tensorflow",
        dtypes="float32",
        kinds="normal",
        shapes=["4,16"],
        jobs=1,
    )
    assert report.results and {r.status for r in report.results} == {"skip"}
    assert all("on --quantize cases only" in r.message for r in report.results)
