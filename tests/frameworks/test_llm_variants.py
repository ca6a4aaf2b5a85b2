"""The LLM-era variants end to end: the fixtures of fixtures/llm_norms.py (PyTorch user code,
correct and buggy) through verify, each buggy one failing with the diagnosis that names its
mistake, each correct one passing; torch's own layer norm without bias, and ONNX Runtime's
com.microsoft Skip*LayerNormalization."""

from __future__ import annotations

from pathlib import Path

import pytest
from _require import require

import normcheck
from normcheck.errors import UsageError
from normcheck.verify.records import FAIL, KNOWN, SKIP
from normcheck.verify.request import Report

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "llm_norms.py"
SMALL = {"dtypes": "float32,float16,bfloat16", "kinds": "normal,large_mean,constant"}


def _check(op: str, name: str, **options) -> Report:
    return normcheck.check(op, f"{FIXTURES}:{name}", framework="torch", jobs=2, **{**SMALL, **options})


CORRECT = [
    ("rms", "GemmaRMSNorm", "gemma"),
    ("rms", "gemma_rms_norm", "gemma"),
    ("ln", "LayerNormNoBias", "nobias"),
    ("add_rms", "fused_add_rms_norm", None),
    ("add_rms", "FusedAddRMSNorm", None),
    ("add_ln", "fused_add_layer_norm", None),
]


@pytest.mark.parametrize(("op", "name", "variant"), CORRECT, ids=[c[1] for c in CORRECT])
def test_correct_fixtures_pass(op, name, variant):
    require("torch")
    report = _check(op, name, variant=variant)
    assert report.ok, [r.message for r in report.failing()][:3]
    assert report.counts["pass"] > 0


BUGGY = [
    ("rms", "GemmaRMSNormNoOffset", "gemma", "gemma_offset_missing"),
    ("rms", "gemma_rms_norm_no_offset", "gemma", "gemma_offset_missing"),
    ("rms", "GemmaRMSNormDoubleOffset", "gemma", "gemma_offset_doubled"),
    ("add_rms", "fused_add_rms_norm_stale_residual", None, "residual_not_updated"),
    ("add_ln", "fused_add_layer_norm_unrounded_sum", None, "residual_sum_unrounded"),
]


@pytest.mark.parametrize(("op", "name", "variant", "hypothesis"), BUGGY, ids=[b[1] for b in BUGGY])
def test_buggy_fixtures_fail_with_their_diagnosis(op, name, variant, hypothesis):
    require("torch")
    report = _check(op, name, variant=variant)
    failing = [r for r in report.results if r.status == FAIL]
    assert failing
    for r in failing:
        assert r.diagnosis is not None and r.diagnosis.hypothesis == hypothesis, (r.check, r.diagnosis)
        assert not r.diagnosis.ambiguous
        assert r.diagnosis.fix


# Precision mistakes whose error never exceeds the output's own rounding on these ops: rounding
# 1 + weight to the input dtype moves the scale by at most half a unit in the last place, and
# normalizing the unrounded x + residual in RMS norm (no mean subtracted, no cancellation) moves
# the output as much. Both pass, as they must: no cause is named without a failure.
WITHIN_ROUNDING = [
    ("rms", "GemmaRMSNormOffsetInDtype", "gemma"),
    ("add_rms", "fused_add_rms_norm_unrounded_sum", None),
]


@pytest.mark.parametrize(("op", "name", "variant"), WITHIN_ROUNDING, ids=[w[1] for w in WITHIN_ROUNDING])
def test_mistakes_within_the_dtypes_rounding_pass(op, name, variant):
    require("torch")
    assert _check(op, name, variant=variant).ok


def test_torch_layer_norm_without_bias_passes():
    require("torch")
    report = normcheck.check("ln", framework="torch", variant="nobias", jobs=2, **SMALL)
    assert report.ok
    impls = {r.case.impl for r in report.results if r.status != SKIP}
    assert impls == {"F.layer_norm", "nn.LayerNorm"}
    assert all(r.check != "grad_bias" for r in report.results)
    # its half-precision rows carry PyTorch's documented layer-norm defect, confirmed
    known = [r for r in report.results if r.status == KNOWN]
    assert all(r.diagnosis is not None and r.diagnosis.hypothesis == "saved_stats_in_input_dtype" for r in known)


def test_torch_has_no_gemma_rms_norm_built_in():
    require("torch")
    report = normcheck.check("rms", framework="torch", variant="gemma", jobs=1, dtypes="float32", kinds="normal")
    assert report.results and all(r.status == SKIP for r in report.results)
    assert all("has no form for the gemma variant" in r.message for r in report.results)
    with pytest.raises(UsageError, match="no framework checked has add_rms built in"):
        normcheck.check("add_rms", framework="torch", jobs=1)


def test_onnxruntime_skip_simplified_layer_normalization_passes():
    require("onnxruntime")
    report = normcheck.check("add_rms", framework="onnxruntime", jobs=2)
    assert report.ok
    ran = [r for r in report.results if r.status != SKIP]
    assert {r.check for r in ran} == {"forward", "residual_out"}
    assert {r.case.dtype for r in ran} == {"float32", "float16"}


def test_onnxruntime_skip_layer_normalization_float16_is_a_known_defect():
    require("onnxruntime")
    report = normcheck.check("add_ln", framework="onnxruntime", jobs=2, dtypes="float32,float16")
    assert report.ok  # known defects allowed
    known = [r for r in report.results if r.status == KNOWN]
    assert known and all(r.case.dtype == "float16" and r.check == "forward" for r in known)
    assert all(r.diagnosis is not None and r.diagnosis.hypothesis == "residual_sum_unrounded" for r in known)


def test_variant_usage_errors():
    with pytest.raises(UsageError, match="has no variant 'gemma'"):
        normcheck.check("ln", framework="torch", variant="gemma", jobs=1)
    with pytest.raises(UsageError, match="profile quick covers the five plain ops"):
        normcheck.check("rms", framework="torch", variant="gemma", profile="quick", jobs=1)


def test_batch_norm_momentum_none():
    require("torch")
    options = {"variant": "cumulative", "dtypes": "float32", "kinds": "normal,large_mean", "jobs": 2}
    builtin = normcheck.check("bn", framework="torch", **options)
    assert builtin.ok
    ran = {r.case.impl for r in builtin.results if r.status != SKIP}
    assert ran == {"nn.BatchNormNd"}  # F.batch_norm takes a number: skip rows
    buggy = normcheck.check("bn", f"{FIXTURES}:BatchNormNoneAsDefault", **options)
    failing = [r for r in buggy.results if r.status == FAIL]
    assert failing
    for r in failing:
        assert r.diagnosis is not None and r.diagnosis.hypothesis == "cumulative_momentum_ignored", r.diagnosis
        # on large-mean data in evaluation, the one-pass variance fed the running variance the
        # code itself kept fits as well: said to be ambiguous, never named alone
        assert not r.diagnosis.ambiguous or (r.case.kind == "large_mean" and "one_pass_variance" in r.diagnosis.also)


JAX_FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "jax_functions.py"


def test_jax_functions_take_the_gemma_and_nobias_variants():
    require("jax")
    options = {"framework": "jax", "dtypes": "float32,bfloat16", "kinds": "normal,large_mean", "jobs": 2}
    assert normcheck.check("rms", f"{JAX_FIXTURES}:gemma_rms_norm", variant="gemma", **options).ok
    assert normcheck.check("ln", f"{JAX_FIXTURES}:layer_norm", variant="nobias", **options).ok
    report = normcheck.check("rms", f"{JAX_FIXTURES}:gemma_rms_norm_no_offset", variant="gemma", **options)
    failing = [r for r in report.results if r.status == FAIL]
    assert failing and {r.diagnosis.hypothesis for r in failing if r.diagnosis} == {"gemma_offset_missing"}


@pytest.mark.parametrize(
    ("framework", "impls"),
    [
        ("tensorflow", {"keras.layers.LayerNormalization", "tf.nn.moments+batch_normalization (float32 compute)"}),
        ("jax", {"flax.linen.LayerNorm(use_fast_variance=False)"}),
        ("onnxruntime", {"onnx.LayerNormalization"}),
    ],
)
def test_built_in_layer_norms_without_bias_pass(framework, impls):
    require(framework)
    report = normcheck.check("ln", framework=framework, variant="nobias", dtypes="float32", kinds="normal,large_mean")
    ran = {r.case.impl for r in report.results if r.status not in (SKIP,)}
    assert impls <= ran
    assert not [r for r in report.results if r.status == FAIL and r.case.impl in impls]


def test_keras_rms_scaling_is_a_known_defect_named_by_its_hypothesis():
    require("tensorflow", "keras")
    report = normcheck.check("rms", framework="tensorflow", dtypes="float32", kinds="normal,large_mean")
    scaling = [r for r in report.results if r.case.impl == "keras.layers.LayerNormalization(rms_scaling=True)"]
    known = [r for r in scaling if r.status == KNOWN]
    assert known and not [r for r in scaling if r.status == FAIL]
    assert all(r.diagnosis is not None and r.diagnosis.hypothesis == "rms_from_variance" for r in known)
    assert report.ok  # a known defect does not fail the run


TF_FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "tf_functions.py"


def test_raw_tensorflow_functions_take_the_gemma_variant():
    require("tensorflow")
    options = {"framework": "tensorflow", "dtypes": "float32,bfloat16", "kinds": "normal,large_mean"}
    assert normcheck.check("rms", f"{TF_FIXTURES}:gemma_rms_norm", variant="gemma", **options).ok
    report = normcheck.check("rms", f"{TF_FIXTURES}:gemma_rms_norm_doubled", variant="gemma", **options)
    failing = [r for r in report.results if r.status == FAIL]
    assert failing and {r.diagnosis.hypothesis for r in failing if r.diagnosis} == {"gemma_offset_doubled"}


def test_a_fused_op_without_framework_runs_on_the_frameworks_that_have_it():
    """Each framework is planned in its own worker: one without add_rms must not refuse the run
    that another (ONNX Runtime's Skip op) can check."""
    require("onnxruntime")
    report = normcheck.check("add_rms", dtypes="float32", kinds="normal", jobs=2)
    assert report.ok and {r.case.framework for r in report.results if r.status not in (SKIP,)} == {"onnxruntime"}
