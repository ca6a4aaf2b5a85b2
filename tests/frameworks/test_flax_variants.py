"""Flax modules (``--impl FILE:Class``) on the op variants and layer norm over any axes, constructed
with the Flax layer's fields: Gemma's RMS norm with its stored scale set as is (the module adds
the 1), layer norm without bias as ``use_bias=False``, layer norm over the channel axis as
``reduction_axes = feature_axes = (1,)``."""

from __future__ import annotations

from pathlib import Path

import pytest
from _require import require

import normcheck
from normcheck.verify.records import FAIL
from normcheck.verify.request import Report

MODULES = Path(__file__).resolve().parents[2] / "fixtures" / "flax_modules.py"


def _check(op: str, name: str, **options) -> Report:
    require("jax")
    return normcheck.check(op, f"{MODULES}:{name}", jobs=1, **options)


@pytest.mark.parametrize(
    ("op", "name", "options"),
    [
        ("rms", "GemmaRMSNorm", {"variant": "gemma", "shapes": ["4,16", "2,5,33"]}),
        ("ln", "LayerNorm", {"variant": "nobias", "shapes": ["4,16", "2,3,8"]}),
        ("ln", "LayerNorm", {"axes": "1", "shapes": ["2,6,5,7"]}),
        ("ln", "LayerNorm", {"axes": "1,2,3", "shapes": ["2,6,5,7"]}),
    ],
    ids=["gemma", "nobias", "axes-1", "axes-1,2,3"],
)
def test_correct_modules_pass_the_variants(op, name, options):
    dtypes = "float32,bfloat16" if "variant" in options else "float32"  # --axes: the same kernel over other axes
    report = _check(op, name, dtypes=dtypes, **options)
    assert report.ok, [r.message for r in report.failing()][:3]
    assert report.counts["pass"] > 0 and not report.counts["skip"]


def test_layer_norm_without_bias_has_no_bias_param():
    report = _check("ln", "LayerNorm", variant="nobias", dtypes="float32", kinds="normal")
    checks = {r.check for r in report.results}
    assert "grad_weight" in checks and "grad_bias" not in checks


def test_gemmas_offset_missing_is_named():
    report = _check("rms", "GemmaRMSNormNoOffset", variant="gemma", dtypes="float32", kinds="normal")
    failing = [r for r in report.results if r.status == FAIL]
    assert failing and {r.diagnosis.hypothesis for r in failing if r.diagnosis} == {"gemma_offset_missing"}
    assert all(r.diagnosis is not None for r in failing)


def test_a_layer_norm_over_the_wrong_axes_fails_under_axes():
    report = _check("ln", "LayerNormBatchAxes", axes="1", dtypes="float64", kinds="normal", shapes=["2,6,5,7"])
    assert not report.ok
