"""JAX functions with FP8-quantized output (``--quantize``): the fixtures of fixtures/jax_functions.py
called as the PyTorch function form calls fixtures/fp8_norms.py, ``fn(x, normalized_shape, weight[,
bias], eps[, scale])`` -> (q, scale), each correct one passing the "quantized" and "scale" checks,
each buggy one failing with the diagnosis that names its mistake; and what the form reads back."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from _require import require

import normcheck
from normcheck.verify.records import ERROR, FAIL, PASS, SKIP
from normcheck.verify.request import Report

FUNCTIONS = Path(__file__).resolve().parents[2] / "fixtures" / "jax_functions.py"
SMALL = {"shapes": ["4,16", "2,5,33"], "dtypes": "float32,bfloat16,float64", "kinds": "normal,half_range", "jobs": 1}

# (name, op, scale)
CORRECT = [
    ("rms_norm_fp8", "rms", "row"),
    ("rms_norm_fp8_static", "rms", "static"),
    ("layer_norm_fp8", "ln", "row"),
]
# (name, op, scale, the hypothesis its failures must name)
BUGGY = [
    ("rms_norm_fp8_fnuz_max", "rms", "row", "fp8_max_240"),
    ("rms_norm_fp8_tensor_scale", "rms", "row", "tensor_scale"),
]


def _check(op: str, name: str, scale: str, path: Path = FUNCTIONS, **options) -> Report:
    require("jax")
    return normcheck.check(
        op, f"{path}:{name}", framework="jax", scale=scale, **{"quantize": "e4m3", **SMALL, **options}
    )


@pytest.mark.parametrize(("name", "op", "scale"), CORRECT, ids=[c[0] for c in CORRECT])
def test_correct_fixtures_pass(name, op, scale):
    report = _check(op, name, scale)
    assert report.ok and not report.counts[ERROR], [r.message for r in report.failing()][:3]
    passed = {r.check for r in report.results if r.status == PASS}
    assert passed == {"quantized", "scale"}
    assert all(r.status == SKIP for r in report.results if r.check.startswith("grad_"))
    assert all(r.as_dict()["params"].endswith(f"fp8 e4m3 {scale}") for r in report.results)


@pytest.mark.parametrize(("name", "op", "scale", "hypothesis"), BUGGY, ids=[b[0] for b in BUGGY])
def test_buggy_fixtures_fail_with_their_diagnosis(name, op, scale, hypothesis):
    report = _check(op, name, scale)
    failing = [r for r in report.results if r.status == FAIL]
    assert failing and not report.ok
    assert not report.counts[ERROR], [r.message for r in report.results if r.status == ERROR][:3]
    for r in failing:
        d = r.diagnosis
        assert d is not None and d.hypothesis == hypothesis, (r.check, r.message, d)
        assert not d.ambiguous and d.fix


def _with(tmp_path: Path, extra: str) -> Path:
    """fixtures/jax_functions.py with ``extra`` appended, as a file of its own."""
    path = tmp_path / "jax_functions_more.py"
    path.write_text(FUNCTIONS.read_text() + "\n\n" + extra)
    return path


def test_e5m2_and_empty_rows_pass(tmp_path):
    """float8_e5m2 values, and cases of no rows or rows of no elements (amax 0: the minimum scale)."""
    path = _with(
        tmp_path,
        "def rms_norm_fp8_e5m2(x, normalized_shape, weight, eps):\n"
        "    y = _fp8_rms_norm(x, normalized_shape, weight, eps)\n"
        "    scale = _dynamic_scale(_row_amax(y, _trailing(x, normalized_shape)), 57344.0)\n"
        "    return _fp8_quantize(y, scale, E5M2), _per_row(scale)\n",
    )
    report = _check("rms", "rms_norm_fp8_e5m2", "row", path=path, quantize="e5m2")
    assert report.ok and not report.counts[ERROR], [r.message for r in report.failing()][:3]
    assert {r.check for r in report.results if r.status == PASS} == {"quantized", "scale"}
    for name, scale in (("rms_norm_fp8", "row"), ("rms_norm_fp8_static", "static")):
        empty = _check("rms", name, scale, shapes=["4,0", "0,8"])
        assert empty.ok and not empty.counts[ERROR], [r.message for r in empty.failing()][:3]


def test_q_as_a_float_array_and_q_alone_with_a_static_scale(tmp_path):
    """q may come as a float32 array holding FP8 values; with a static scale, q alone (no scale check)."""
    path = _with(
        tmp_path,
        "def as_float(x, normalized_shape, weight, eps):\n"
        "    q, scale = rms_norm_fp8(x, normalized_shape, weight, eps)\n"
        "    return q.astype(jnp.float32), scale\n\n\n"
        "def q_alone(x, normalized_shape, weight, eps, scale):\n"
        "    return rms_norm_fp8_static(x, normalized_shape, weight, eps, scale)[0]\n\n\n"
        "def no_pair(x, normalized_shape, weight, eps):\n"
        "    return rms_norm_fp8(x, normalized_shape, weight, eps)[0]\n",
    )
    floats = _check("rms", "as_float", "row", path=path)
    assert floats.ok and {r.check for r in floats.results if r.status == PASS} == {"quantized", "scale"}
    alone = _check("rms", "q_alone", "static", path=path)
    assert alone.ok and {r.check for r in alone.results if r.status == PASS} == {"quantized"}
    wrong = _check("rms", "no_pair", "row", path=path, shapes=["4,16"], dtypes="float32", kinds="normal")
    errors = [r.message for r in wrong.results if r.status == ERROR]
    assert errors and all("returns (q, scale)" in m for m in errors), errors


def _fixtures():
    spec = importlib.util.spec_from_file_location("jax_functions_fixture", FUNCTIONS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_form_reads_q_in_its_fp8_dtype_and_calls_under_jit():
    """What the form hands verify: q as float64 with the dtype name float8_e4m3fn, the scale as
    float32 (rows, 1); the call traced by jax.jit, not run op by op."""
    require("jax")
    from normcheck.frameworks.jax import forms
    from normcheck.ops import OpParams
    from normcheck.ops.quantize import Quantization
    from normcheck.problem import Problem

    fn = _fixtures().rms_norm_fp8
    impl = forms.build("jax_function", "rms", fn, "rms_norm_fp8", omit_defaults=False)
    x = np.random.default_rng(0).standard_normal((3, 8))
    problem = Problem(
        op="rms",
        shape=x.shape,
        params=OpParams(normalized_ndim=1, quant=Quantization("e4m3")),
        dtype="float32",
        kind="normal",
        eps=1e-6,
        momentum=0.1,
        x=x,
        dy=np.zeros_like(x),
        weight=np.linspace(0.5, 1.5, 8),
        bias=None,
    )
    out = impl.run(problem, "contiguous", "cpu")
    q, scale = out.values["quantized"], out.values["scale"]
    assert out.dtypes["quantized"] == "float8_e4m3fn" and out.dtypes["scale"] == "float32"
    assert q.dtype == np.float64 and q.shape == (3, 8) and scale.shape == (3, 1)
    assert np.all(np.abs(q) <= 448.0) and np.isclose(np.abs(q).max(axis=1), 448.0).all()
    assert not forms._quantized_case(impl.quantized_call(problem)).eager
