"""Weight Standardization in the JAX function form: ``fn(x, weight, bias, padding=p, eps=e)`` on
NCHW x and an OIHW weight, called as the PyTorch function form calls it, the fixtures of
fixtures/jax_functions.py through verify: the correct one passes (ws, and ws_gn with normcheck's
group norm after it), each buggy one fails with the diagnosis that names its mistake, as
tests/frameworks/test_ws_torch.py holds the PyTorch fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from _require import require

import normcheck
from normcheck.verify.records import FAIL, SKIP
from normcheck.verify.request import Report

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
FUNCTIONS = FIXTURES / "jax_functions.py"
FULL = "float32,float64"
SMALL = ["2,3,6,6"]


def _check(op: str, name: str, path: Path = FUNCTIONS, **options) -> Report:
    return normcheck.check(op, f"{path}:{name}", framework="jax", jobs=1, **options)


def _causes(report: Report) -> set[str | None]:
    return {r.diagnosis.hypothesis if r.diagnosis else None for r in report.results if r.status == FAIL}


def test_a_correct_function_passes_ws_with_every_check():
    require("jax")
    report = _check("ws", "ws_conv", dtypes=FULL, shapes=SMALL)
    assert report.ok and report.counts["pass"] > 0, [r.message for r in report.failing()][:3]
    assert not report.counts["skip"] and not report.counts["error"]
    assert {r.check for r in report.results} == {"forward", "grad_input", "grad_weight", "grad_bias"}
    assert {r.case.dtype for r in report.results} == {"float32", "float64"}


def test_a_correct_function_passes_inside_group_norm():
    require("jax")
    report = _check("ws_gn", "ws_conv", dtypes=FULL, shapes=SMALL, groups=3)
    assert report.ok and report.counts["pass"] > 0, [r.message for r in report.failing()][:3]
    assert {r.check for r in report.results} == {
        "forward",
        "grad_input",
        "grad_weight",
        "grad_gn_weight",
        "grad_gn_bias",
    }


@pytest.mark.slow
def test_a_correct_function_passes_the_default_cases_in_half_precision():
    """float16 and bfloat16 on the default cases and the inputs that stress them (float32 and
    float64 are the other tests'), hostile weights included; ws_gn runs the same convolution."""
    require("jax")
    report = _check("ws", "ws_conv", dtypes="float16,bfloat16", kinds="large_mean,constant,half_range")
    assert report.ok, [r.message for r in report.failing()][:3]
    assert not report.counts["error"]


BUGGY = [
    ("ws_conv_per_input_channel", "ws_axes"),
    ("ws_conv_unbiased", "ws_unbiased_variance"),
]


@pytest.mark.parametrize(("name", "cause"), BUGGY, ids=[b[0] for b in BUGGY])
def test_buggy_functions_fail_with_their_diagnosis(name, cause):
    require("jax")
    report = _check("ws", name, dtypes="float32", kinds="normal,tiny_scale", shapes=["2,5,6,6"])
    assert not report.ok
    assert _causes(report) == {cause}


def test_a_function_without_padding_or_eps_runs_what_it_can_express(tmp_path):
    """No padding parameter: the padded cases are skips; no eps: the explicit call style is a
    skip, the defaults call style is checked against --eps (as the torch function form)."""
    require("jax")
    source = tmp_path / "fixed.py"
    source.write_text(
        "import jax\n"
        "def ws_fixed(x, weight, bias):\n"
        "    m = weight.mean(axis=(1, 2, 3), keepdims=True)\n"
        "    v = weight.var(axis=(1, 2, 3), keepdims=True)\n"
        "    w = (weight - m) * jax.lax.rsqrt(v + 1e-6)\n"
        "    y = jax.lax.conv_general_dilated(x, w, (1, 1), 'VALID', dimension_numbers=('NCHW', 'OIHW', 'NCHW'))\n"
        "    return y if bias is None else y + bias.reshape(1, -1, 1, 1)\n"
    )
    report = _check("ws", "ws_fixed", path=source, dtypes="float64", kinds="normal")
    assert report.ok and report.counts["pass"] > 0, [r.message for r in report.failing()][:3]
    skips = [r for r in report.results if r.status == SKIP]
    assert any("takes no padding" in r.message for r in skips)
    assert any("takes no eps" in r.message for r in skips)
    passed = {(r.case.impl, r.case.params.conv) for r in report.results if r.status == "pass"}
    assert passed and all(impl.endswith("(defaults)") and conv[2] == 0 for impl, conv in passed)
