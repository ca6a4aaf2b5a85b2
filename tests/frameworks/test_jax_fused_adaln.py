"""The JAX user forms on the cases no JAX layer has built in: a fused residual add + norm (add_rms,
add_ln) and DiT's adaptive layer norm (adaln), as JAX functions (fixtures/jax_functions.py) and
flax.linen modules (fixtures/flax_modules.py) through verify: each correct one passing with the
checks the PyTorch forms give, each buggy one failing with the diagnosis naming its mistake, and
the usage errors and skips of what the forms cannot call."""

from __future__ import annotations

from pathlib import Path

import pytest
from _require import require

import normcheck
from normcheck.errors import UsageError
from normcheck.verify.records import ERROR, FAIL, PASS, SKIP
from normcheck.verify.request import Report

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
FUNCTIONS, MODULES = FIXTURES / "jax_functions.py", FIXTURES / "flax_modules.py"
SMALL = {"dtypes": "float32,float64", "kinds": "normal,large_mean", "jobs": 1}
FUSED_SHAPES = ["4,16", "2,3,7,9"]  # one normalized axis, and two
ADALN_SHAPES = ["2,5,33", "4,4,16"]


def _check(op: str, path: Path, name: str, **options) -> Report:
    shapes = ADALN_SHAPES if op == "adaln" else FUSED_SHAPES
    return normcheck.check(op, f"{path}:{name}", framework="jax", **{"shapes": shapes, **SMALL, **options})


def _checks(report: Report) -> set[str]:
    return {r.as_dict()["check"] for r in report.results}


def _named(report: Report, hypothesis: str) -> None:
    failing = [r for r in report.results if r.status == FAIL]
    assert failing
    assert not any(r.status == ERROR for r in report.results)
    for r in failing:
        assert r.diagnosis is not None and r.diagnosis.hypothesis == hypothesis, (r.check, r.diagnosis)
        assert not r.diagnosis.ambiguous and r.diagnosis.fix


FUSED_CORRECT = [
    ("add_rms", FUNCTIONS, "fused_add_rms_norm"),
    ("add_ln", FUNCTIONS, "fused_add_layer_norm"),
    ("add_rms", MODULES, "FusedAddRMSNorm"),
    ("add_ln", MODULES, "FusedAddLayerNorm"),
]


@pytest.mark.parametrize(("op", "path", "name"), FUSED_CORRECT, ids=[c[2] for c in FUSED_CORRECT])
def test_correct_fused_add_norm_passes_with_both_outputs_and_their_gradients(op, path, name):
    require("jax")
    report = _check(op, path, name)
    assert report.ok and not report.counts[ERROR], [r.message for r in report.failing()][:3]
    assert report.counts[PASS] > 0
    expected = {"forward", "residual_out", "grad_input", "grad_residual", "grad_weight"}
    assert expected | ({"grad_bias"} if op == "add_ln" else set()) == _checks(report) - {"run"}


def test_correct_fused_add_layer_norm_passes_in_half_precision():
    """x + residual rounded to bfloat16 before the norm, as the reference does, under jax.jit too
    (XLA would otherwise keep the sum in float32: the fixture's _stored)."""
    require("jax")
    report = _check("add_ln", FUNCTIONS, "fused_add_layer_norm", dtypes="bfloat16,float16")
    assert report.ok and report.counts[PASS] > 0, [r.message for r in report.failing()][:3]


@pytest.mark.parametrize(
    ("path", "name"),
    [(FUNCTIONS, "fused_add_rms_norm_stale_residual"), (MODULES, "FusedAddRMSNormStaleResidual")],
)
def test_a_stale_residual_is_named(path, name):
    require("jax")
    report = _check("add_rms", path, name)
    _named(report, "residual_not_updated")
    assert {r.check for r in report.results if r.status == FAIL} >= {"residual_out"}


def test_a_fused_function_returning_one_array_is_an_error_row_that_says_so(tmp_path):
    require("jax")
    code = (
        "import jax.numpy as jnp\n\n\n"
        "def add_rms(x, residual, weight, eps):\n"
        "    h = x + residual\n"
        "    return h / jnp.sqrt(jnp.mean(h * h, axis=-1, keepdims=True) + eps) * weight\n"
    )
    (tmp_path / "one_output.py").write_text(code)
    report = _check("add_rms", tmp_path / "one_output.py", "add_rms", kinds="normal", dtypes="float32")
    errors = [r for r in report.results if r.status == ERROR]
    assert errors and all("must return (output, residual_out)" in r.message for r in errors)


def test_a_flax_fused_module_is_skipped_for_a_variant_it_has_no_form_for():
    require("jax")
    report = _check("add_ln", MODULES, "FusedAddLayerNorm", variant="nobias", kinds="normal", dtypes="float32")
    assert report.results and all(r.status == SKIP and "nobias" in r.message for r in report.results)


def test_a_fused_function_takes_the_variants_it_computes():
    require("jax")
    report = _check("add_ln", FUNCTIONS, "fused_add_layer_norm", variant="nobias", kinds="normal")
    assert report.ok and report.counts[PASS] > 0 and "grad_bias" not in _checks(report)
    _named(_check("add_rms", FUNCTIONS, "fused_add_rms_norm", variant="gemma", kinds="normal"), "gemma_offset_missing")


@pytest.mark.parametrize(("path", "name"), [(FUNCTIONS, "adaln"), (MODULES, "AdaLayerNorm")])
def test_correct_adaln_passes_with_the_scale_and_shift_gradients(path, name):
    require("jax")
    report = _check("adaln", path, name)
    assert report.ok and not report.counts[ERROR], [r.message for r in report.failing()][:3]
    assert report.counts[PASS] > 0
    assert _checks(report) == {"forward", "grad_input", "grad_scale", "grad_shift"}


@pytest.mark.parametrize(
    ("path", "name", "hypothesis"),
    [
        (FUNCTIONS, "adaln_no_offset", "adaln_offset_missing"),
        (MODULES, "AdaLayerNormAffine", "adaln_affine_left_in"),
    ],
)
def test_buggy_adaln_is_named(path, name, hypothesis):
    require("jax")
    _named(_check("adaln", path, name), hypothesis)


def test_an_adaln_function_that_cannot_take_x_shift_scale_is_a_usage_error():
    require("jax")
    with pytest.raises(UsageError, match="fewer than three arguments"):
        _check("adaln", FUNCTIONS, "adaln_gate")


def test_an_adaln_module_without_an_eps_field_runs_in_the_defaults_style_only(tmp_path):
    require("jax")
    code = (
        "import flax.linen as nn\n"
        "import jax.numpy as jnp\n\n\n"
        "class FinalNorm(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x, shift, scale):\n"
        "        z = nn.LayerNorm(epsilon=1e-6, use_scale=False, use_bias=False)(x)\n"
        "        return z * (1 + scale[:, None]) + shift[:, None]\n"
    )
    (tmp_path / "final_norm.py").write_text(code)
    report = _check("adaln", tmp_path / "final_norm.py", "FinalNorm", kinds="normal")
    assert report.ok and not report.counts[ERROR], [r.message for r in report.failing()][:3]
    explicit = [r for r in report.results if not r.case.impl.endswith("(defaults)")]
    assert explicit and all(r.status == SKIP and "no eps field" in r.message for r in explicit)
    assert any(r.status == PASS for r in report.results if r.case.impl.endswith("(defaults)"))
