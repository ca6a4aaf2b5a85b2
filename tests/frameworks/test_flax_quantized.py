"""Flax modules with FP8-quantized output (``--quantize``): the fixtures of fixtures/flax_fp8.py,
constructed with the fields of flax.linen.RMSNorm / LayerNorm and called as
``module.apply(variables, x)`` (``(x, scale)`` for a static scale) -> (q, scale), as the PyTorch
module form calls its module; each correct one passing the "quantized" and "scale" checks, each
buggy one failing with the diagnosis that names its mistake, as tests/frameworks/test_jax_quantized.py
holds the JAX functions."""

from __future__ import annotations

from pathlib import Path

import pytest
from _require import require

import normcheck
from normcheck.verify.records import ERROR, FAIL, PASS, SKIP
from normcheck.verify.request import Report

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
MODULES = FIXTURES / "flax_fp8.py"
SMALL = {"shapes": ["4,16", "2,5,33"], "dtypes": "float32,bfloat16", "kinds": "normal,half_range", "jobs": 1}

# (name, op, scale)
CORRECT = [
    ("RMSNormFP8", "rms", "row"),
    ("RMSNormFP8Static", "rms", "static"),
    ("LayerNormFP8", "ln", "row"),
]
# (name, op, scale, the hypothesis its failures must name)
BUGGY = [
    ("RMSNormFP8FnuzMax", "rms", "row", "fp8_max_240"),
    ("RMSNormFP8TensorScale", "rms", "row", "tensor_scale"),
]


def _check(op: str, name: str, scale: str, path: Path = MODULES, **options) -> Report:
    require("jax", "flax")
    return normcheck.check(op, f"{path}:{name}", scale=scale, **{"quantize": "e4m3", **SMALL, **options})


@pytest.mark.parametrize(("name", "op", "scale"), CORRECT, ids=[c[0] for c in CORRECT])
def test_correct_modules_pass_in_both_call_styles(name, op, scale):
    report = _check(op, name, scale)
    assert report.ok and not report.counts[ERROR], [r.message for r in report.failing()][:3]
    assert {r.check for r in report.results if r.status == PASS} == {"quantized", "scale"}
    assert all(r.status == SKIP for r in report.results if r.check.startswith("grad_"))
    assert {r.case.impl for r in report.results} == {name, f"{name} (defaults)"}
    assert all(r.as_dict()["params"].endswith(f"fp8 e4m3 {scale}") for r in report.results)


@pytest.mark.parametrize(("name", "op", "scale", "hypothesis"), BUGGY, ids=[b[0] for b in BUGGY])
def test_buggy_modules_fail_with_their_diagnosis(name, op, scale, hypothesis):
    report = _check(op, name, scale, dtypes="float32")
    failing = [r for r in report.results if r.status == FAIL]
    assert failing and not report.ok
    assert not report.counts[ERROR], [r.message for r in report.results if r.status == ERROR][:3]
    for r in failing:
        d = r.diagnosis
        assert d is not None and d.hypothesis == hypothesis, (r.check, r.message, d)
        assert not d.ambiguous and d.fix


def test_a_plain_norm_module_on_a_quantized_case_is_an_error_row_saying_what_to_return():
    report = _check("rms", "RMSNorm", "row", path=FIXTURES / "flax_modules.py", shapes=["4,16"], dtypes="float32")
    errors = [r.message for r in report.results if r.status == ERROR]
    assert errors and all("returns (q, scale)" in m for m in errors), errors
