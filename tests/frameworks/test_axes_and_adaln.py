"""Layer norm over given axes and adaptive layer norm end to end: the fixtures of
fixtures/axis_norms.py and fixtures/adaln.py through verify (each correct one passing, each buggy
one failing with the diagnosis naming its mistake), torch's and Keras's built-ins, and the usage
errors of --axes and --op adaln."""

from __future__ import annotations

from pathlib import Path

import pytest
from _require import require

import normcheck
from normcheck.errors import UsageError
from normcheck.verify.records import ERROR, FAIL, KNOWN, PASS, SKIP
from normcheck.verify.request import Report

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
AXES = {"axes": 1, "shapes": ["2,6,5,7", "1,5,3,3"], "dtypes": "float32,float64", "kinds": "normal"}
ADALN = {"dtypes": "float32,float64", "kinds": "normal,tiny_scale", "shapes": ["2,5,33", "4,4,16"]}


def _axes(name: str, **options) -> Report:
    return normcheck.check("ln", f"{FIXTURES / 'axis_norms.py'}:{name}", jobs=2, **{**AXES, **options})


def _adaln(name: str, **options) -> Report:
    return normcheck.check(
        "adaln", f"{FIXTURES / 'adaln.py'}:{name}", framework="torch", jobs=2, **{**ADALN, **options}
    )


def _named(report: Report, hypothesis: str) -> None:
    failing = [r for r in report.results if r.status == FAIL]
    assert failing
    for r in failing:
        assert r.diagnosis is not None and r.diagnosis.hypothesis == hypothesis, (r.check, r.diagnosis)
        assert not r.diagnosis.ambiguous and r.diagnosis.fix


@pytest.mark.parametrize("name", ["LayerNorm2d", "ConvNeXtLayerNorm2d"])
def test_correct_layer_norm_2d_passes(name):
    require("torch")
    report = _axes(name, dtypes="float32,float16", kinds="normal,large_mean,constant")
    assert report.ok, [r.message for r in report.failing()][:3]
    assert report.counts[PASS] > 0


def test_last_axis_layer_norm_2d_is_named():
    require("torch")
    report = _axes("LastAxisLayerNorm2d")
    _named(report, "axes_last_only")
    assert "axis 3 (W)" in next(r for r in report.results if r.status == FAIL).diagnosis.cause


def test_group_norm_passed_off_as_layer_norm_2d_is_named_with_its_axes():
    require("torch")
    report = _axes("GroupNormAsLayerNorm2d")
    _named(report, "axes_other")
    cause = next(r for r in report.results if r.status == FAIL).diagnosis.cause
    assert "axes [1, 2, 3] (C, H, W)" in cause and "GroupNorm(1, C)" in cause


def test_builtins_over_the_channel_axis():
    require("torch")
    report = normcheck.check("ln", framework="torch", jobs=2, **AXES)
    assert report.ok and {r.case.impl for r in report.results} == {"F.layer_norm", "nn.LayerNorm"}
    assert all(r.case.params.axes == (1,) for r in report.results)


@pytest.mark.slow
def test_keras_layer_normalization_over_the_channel_axis():
    require("tensorflow")
    report = normcheck.check("ln", framework="tensorflow", jobs=2, **{**AXES, "shapes": ["2,6,5,7"]})
    assert report.ok and report.counts[PASS] > 0 and not report.counts[SKIP]


def test_onnx_layer_normalization_skips_axes_it_cannot_take():
    require("onnxruntime")
    report = normcheck.check("ln", framework="onnxruntime", jobs=1, **{**AXES, "shapes": ["2,6,5,7"]})
    assert report.ok and {r.status for r in report.results} == {SKIP}
    assert "trailing axes only" in report.results[0].message
    trailing = normcheck.check(
        "ln", framework="onnxruntime", jobs=1, **{**AXES, "axes": "1,2,3", "shapes": ["2,6,5,7"]}
    )
    assert trailing.ok and trailing.counts[PASS] > 0  # [1, rank): ONNX's axis=-3


@pytest.mark.parametrize("name", ["adaln", "adaln_scale_first", "AdaLayerNorm"])
def test_correct_adaln_passes(name):
    require("torch")
    report = _adaln(name, dtypes="float32,bfloat16", kinds="normal,large_mean,constant")
    assert report.ok, [r.message for r in report.failing()][:3]
    checks = {r.as_dict()["check"] for r in report.results}
    assert {"grad_scale", "grad_shift"} <= checks


@pytest.mark.parametrize(
    ("name", "hypothesis"),
    [
        ("adaln_no_offset", "adaln_offset_missing"),
        ("adaln_swapped", "adaln_shift_scale_swapped"),
        ("AdaLayerNormAffine", "adaln_affine_left_in"),
    ],
)
def test_buggy_adaln_is_named(name, hypothesis):
    require("torch")
    _named(_adaln(name), hypothesis)


def test_adaln_broadcast_per_token_is_named_where_it_runs_and_an_error_elsewhere():
    require("torch")
    report = _adaln("adaln_per_token", shapes=["4,4,16", "2,5,8"])
    _named(report, "adaln_per_token")
    errors = [r for r in report.results if r.status == ERROR]
    assert errors and all(r.case.shape == (2, 5, 8) for r in errors)


def test_torch_builtin_adaln_passes_or_is_its_known_defect():
    require("torch")
    report = normcheck.check("adaln", framework="torch", jobs=2, dtypes="float32,float16", kinds="normal,large_mean")
    assert report.ok and {r.status for r in report.results} <= {PASS, KNOWN}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ops": "gn", "axes": 1}, "give --op ln"),
        ({"ops": "ln", "axes": 1, "normalized_ndim": 1, "shapes": ["2,3,4"]}, "not both"),
        ({"ops": "ln", "axes": "1,x"}, "malformed axes"),
        ({"ops": "ln", "axes": 5}, "out of range"),
        ({"ops": "ln", "axes": 1.5}, "axes takes an integer"),
        ({"ops": "ln", "axes": [[1, "a"]]}, "malformed axes"),
        ({"ops": "adaln", "shapes": ["2,8"]}, "3..3-D"),
        ({"ops": "adaln", "profile": "quick"}, "default profile"),
    ],
)
def test_usage_errors(options, message):
    from normcheck.verify.request import Request, validate

    with pytest.raises(UsageError, match=message):
        validate(Request(**options))


def test_adaln_without_a_framework_that_has_it_is_a_usage_error():
    require("tensorflow")
    with pytest.raises(UsageError, match="torch has"):
        normcheck.check("adaln", framework="tensorflow")


def test_an_adaln_module_without_eps_runs_in_the_defaults_style_and_is_skipped_in_the_other():
    require("torch")
    report = _adaln("FinalLayerNorm", dtypes="float32,float64", kinds="normal,large_mean")
    assert report.ok and not report.counts[ERROR], [r.message for r in report.failing()][:3]
    explicit = [r for r in report.results if not r.case.impl.endswith("(defaults)")]
    assert explicit and all(r.status == SKIP and "takes no eps" in r.message for r in explicit)
    assert any(r.status == PASS for r in report.results if r.case.impl.endswith("(defaults)"))


def test_an_adaln_function_that_cannot_take_x_shift_scale_is_a_usage_error():
    require("torch")
    with pytest.raises(UsageError, match="fewer than three arguments"):
        _adaln("gate")


def test_user_code_failing_by_its_frameworks_documented_defect_says_so():
    """timm's LayerNorm2d calls F.layer_norm in float16: on the CPU its gradients fail as PyTorch's
    own do (a documented defect), and each such row says so; it stays a failure."""
    require("torch")
    report = _axes("TimmLayerNorm2d", dtypes="float16,float32", kinds="normal,large_mean")
    failing = [r for r in report.results if r.status == FAIL]
    assert failing and all(r.case.dtype == "float16" for r in failing)
    assert all("torch's own implementation fails the same way here, a documented defect" in r.message for r in failing)
    assert all(r.status == PASS for r in report.results if r.case.dtype == "float32")
