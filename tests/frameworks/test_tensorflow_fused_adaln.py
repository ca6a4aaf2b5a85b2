"""The TensorFlow forms on the fused residual add + norm (``--op add_rms``, ``add_ln``) and adaLN
(``--op adaln``): raw TensorFlow functions (fixtures/tf_functions.py) called as the PyTorch
function form calls them, and Keras layers (fixtures/keras_fused_adaln.py), each correct one passing
with the fused op's or adaLN's own checks, each buggy one failing with the diagnosis naming its
mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
from _require import require

import normcheck
from normcheck.errors import UsageError
from normcheck.verify.records import ERROR, FAIL, PASS, SKIP
from normcheck.verify.request import Report

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
FUNCTIONS, LAYERS = FIXTURES / "tf_functions.py", FIXTURES / "keras_fused_adaln.py"
# few cases: TensorFlow is slow to start, and each case runs in both call styles
SMALL = {"dtypes": "float32,float64", "kinds": "normal,large_mean", "jobs": 1}
FUSED_SHAPES = {"shapes": ["2,5,33"]}
ADALN_SHAPES = {"shapes": ["2,5,33", "4,4,16"]}
FUSED_CHECKS = {"forward", "residual_out", "grad_input", "grad_residual", "grad_weight"}
ADALN_CHECKS = {"forward", "grad_input", "grad_scale", "grad_shift"}


def _check(op: str, path: Path, name: str, **options) -> Report:
    require("tensorflow")
    shapes = FUSED_SHAPES if op != "adaln" else ADALN_SHAPES
    framework = {"framework": "tensorflow"} if path == FUNCTIONS else {}  # a Keras class names its own
    return normcheck.check(op, f"{path}:{name}", **framework, **{**SMALL, **shapes, **options})


def _checks(report: Report) -> set[str]:
    return {r.as_dict()["check"] for r in report.results if r.status == PASS}


def _passes(report: Report, checks: set[str]) -> None:
    assert report.ok, [r.message for r in report.failing()][:3]
    assert not report.counts[ERROR] and not report.counts[SKIP]
    assert checks <= _checks(report)


def _named(report: Report, hypothesis: str) -> None:
    failing = [r for r in report.results if r.status == FAIL]
    assert failing
    assert not report.counts[ERROR]
    for r in failing:
        assert r.diagnosis is not None and r.diagnosis.hypothesis == hypothesis, (r.check, r.diagnosis)
        assert not r.diagnosis.ambiguous and r.diagnosis.fix


# -- fused residual add + norm ----------------------------------------------------------------


def test_fused_add_rms_norm_function_passes():
    _passes(_check("add_rms", FUNCTIONS, "fused_add_rms_norm"), FUSED_CHECKS)


def test_fused_add_layer_norm_function_passes():
    _passes(_check("add_ln", FUNCTIONS, "fused_add_layer_norm"), FUSED_CHECKS | {"grad_bias"})


def test_fused_add_rms_norm_half_precision_passes():
    report = _check("add_rms", FUNCTIONS, "fused_add_rms_norm", dtypes="float16,bfloat16", kinds="normal")
    _passes(report, FUSED_CHECKS)


def test_stale_residual_is_named():
    _named(_check("add_rms", FUNCTIONS, "fused_add_rms_norm_stale_residual"), "residual_not_updated")


def test_fused_add_rms_norm_keras_layer_passes():
    _passes(_check("add_rms", LAYERS, "FusedAddRMSNorm"), FUSED_CHECKS)


def test_a_keras_layer_without_a_residual_is_an_error_row():
    report = _check("add_rms", FIXTURES / "keras_layers.py", "RMSNorm", kinds="normal", dtypes="float32")
    assert report.results and all(r.status == ERROR for r in report.results)


# -- adaptive layer norm ----------------------------------------------------------------------


def test_adaln_function_passes():
    _passes(_check("adaln", FUNCTIONS, "adaln"), ADALN_CHECKS)


def test_adaln_without_the_offset_is_named():
    _named(_check("adaln", FUNCTIONS, "adaln_no_offset"), "adaln_offset_missing")


def test_adaln_function_without_eps_runs_in_the_defaults_style_and_is_skipped_in_the_other():
    report = _check("adaln", FUNCTIONS, "adaln_fixed_eps", kinds="normal")
    assert report.ok and not report.counts[ERROR]
    explicit = [r for r in report.results if not r.case.impl.endswith("(defaults)")]
    assert explicit and all(r.status == SKIP and "takes no eps" in r.message for r in explicit)
    assert any(r.status == PASS for r in report.results if r.case.impl.endswith("(defaults)"))


def test_an_adaln_function_that_cannot_take_x_shift_scale_is_a_usage_error():
    with pytest.raises(UsageError, match="fewer than three arguments"):
        _check("adaln", FUNCTIONS, "adaln_gate")


def test_adaln_keras_layer_passes():
    _passes(_check("adaln", LAYERS, "AdaLayerNorm"), ADALN_CHECKS)


def test_adaln_keras_layer_with_its_own_affine_is_named():
    _named(_check("adaln", LAYERS, "AdaLayerNormAffine", kinds="normal"), "adaln_affine_left_in")
