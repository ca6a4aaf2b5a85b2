"""Keras layers (``--impl FILE:Class``) on the op variants and layer norm over any axes, constructed
as the Keras layer would be: Gemma's RMS norm with its stored weight set as is (the layer adds the
1; a case without a weight gives its always-present scale Gemma's 0), layer norm without bias as
``center=False``, layer norm over the channel axis as ``axis=[1]``."""

from __future__ import annotations

from pathlib import Path

import pytest
from _require import require

import normcheck
from normcheck.verify.records import FAIL
from normcheck.verify.request import Report

LAYERS = Path(__file__).resolve().parents[2] / "fixtures" / "keras_layers.py"


def _check(op: str, name: str, **options) -> Report:
    require("tensorflow")
    return normcheck.check(op, f"{LAYERS}:{name}", jobs=1, **options)


@pytest.mark.parametrize(
    ("op", "name", "options"),
    [
        ("rms", "GemmaRMSNorm", {"variant": "gemma"}),
        ("ln", "LayerNorm", {"variant": "nobias"}),
        ("ln", "LayerNorm", {"axes": "1"}),
        ("ln", "LayerNorm", {"axes": "1,2,3"}),
    ],
    ids=["gemma", "nobias", "axes-1", "axes-1,2,3"],
)
def test_correct_layers_pass_the_variants(op, name, options):
    dtypes = "float32,bfloat16" if "variant" in options else "float32"  # --axes: the same kernel over other axes
    report = _check(op, name, dtypes=dtypes, **options)
    assert report.ok, [r.message for r in report.failing()][:3]
    assert report.counts["pass"] > 0 and not report.counts["skip"]


def test_layer_norm_without_bias_is_built_without_beta():
    report = _check("ln", "LayerNorm", variant="nobias", dtypes="float32", kinds="normal")
    assert "grad_bias" not in {r.check for r in report.results}
    assert "grad_weight" in {r.check for r in report.results}


def test_gemmas_offset_added_twice_is_named_with_and_without_a_weight():
    report = _check("rms", "GemmaRMSNormDoubleOffset", variant="gemma", dtypes="float32", kinds="normal")
    failing = [r for r in report.results if r.status == FAIL]
    assert {r.case.impl for r in failing} == {"GemmaRMSNormDoubleOffset", "GemmaRMSNormDoubleOffset (defaults)"}
    assert {r.diagnosis.hypothesis for r in failing if r.diagnosis} == {"gemma_offset_doubled"}
    assert all(r.diagnosis is not None for r in failing)


def test_a_plain_rms_norm_under_the_gemma_variant_misses_the_offset():
    report = _check("rms", "RMSNorm", variant="gemma", dtypes="float32", kinds="normal")
    failing = [r for r in report.results if r.status == FAIL]
    assert failing and {r.diagnosis.hypothesis for r in failing if r.diagnosis} == {"gemma_offset_missing"}


def test_the_cumulative_batch_norm_is_a_skip_saying_the_form_does_not_run_it():
    report = _check("bn", "BatchNorm", variant="cumulative", dtypes="float32", kinds="normal", shapes=["4,3"])
    assert report.results and all(r.status == "skip" for r in report.results)
    assert {r.message for r in report.results} == {
        "BatchNorm: code of its form is not run on the cumulative variant",
        "BatchNorm (defaults): code of its form is not run on the cumulative variant",
    }
