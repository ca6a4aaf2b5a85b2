"""Weight Standardization in the Flax module form: an ``nn.Conv`` subclass constructed as
``nn.Conv`` is, its "kernel" (kh, kw, C, O) and "bias" set to the case's, run on channels-last x;
the fixtures of fixtures/flax_ws.py through verify: the correct one passes (ws, and ws_gn with
normcheck's group norm after it), each buggy one fails with the diagnosis that names its mistake,
as tests/frameworks/test_jax_ws.py holds the JAX functions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _require import require

import normcheck
from normcheck.verify.records import ERROR, FAIL, PASS, SKIP
from normcheck.verify.request import Report

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
MODULES = FIXTURES / "flax_ws.py"
FULL = "float32,float64"
SMALL = ["2,3,6,6"]


def _check(op: str, name: str, path: Path = MODULES, **options) -> Report:
    require("jax", "flax")
    return normcheck.check(op, f"{path}:{name}", jobs=1, **options)


def _causes(report: Report) -> set[str | None]:
    return {r.diagnosis.hypothesis if r.diagnosis else None for r in report.results if r.status == FAIL}


def test_a_correct_module_passes_ws_with_every_check_channels_last():
    report = _check("ws", "StandardizedConv", dtypes=FULL, shapes=SMALL, kinds="large_mean")
    assert report.ok and report.counts[PASS] > 0, [r.message for r in report.failing()][:3]
    assert not report.counts[SKIP] and not report.counts[ERROR]
    assert {r.check for r in report.results} == {"forward", "grad_input", "grad_weight", "grad_bias"}
    assert {r.case.layout for r in report.results} == {"channels_last"}
    assert {r.case.impl for r in report.results} == {"StandardizedConv", "StandardizedConv (defaults)"}


def test_a_correct_module_passes_inside_group_norm():
    report = _check("ws_gn", "StandardizedConv", dtypes="float32", shapes=SMALL, groups=3, kinds="normal,tiny_scale")
    assert report.ok and report.counts[PASS] > 0, [r.message for r in report.failing()][:3]
    assert {r.check for r in report.results} == {
        "forward",
        "grad_input",
        "grad_weight",
        "grad_gn_weight",
        "grad_gn_bias",
    }


@pytest.mark.slow
def test_a_correct_module_passes_the_default_cases_in_half_precision():
    """float16 and bfloat16 on the default cases and the inputs that stress them, the bias's
    gradient (a sum over N, H and W) included (ws_gn runs the same convolution: its half rows are
    the JAX function's test's)."""
    report = _check("ws", "StandardizedConv", dtypes="float16,bfloat16", kinds="normal,large_mean,half_range")
    assert report.ok, [r.message for r in report.failing()][:3]
    assert not report.counts[ERROR]


BUGGY = [
    ("StandardizedConvPerInputChannel", "ws_axes"),
    ("StandardizedConvWholeKernel", "ws_axes"),
    ("StandardizedConvUnbiased", "ws_unbiased_variance"),
    ("StandardizedConvEpsOutside", "ws_eps_place"),
    ("StandardizedConvDetached", "ws_grad_cut_stats"),
]


SLOW = ("StandardizedConvWholeKernel", "StandardizedConvEpsOutside")


@pytest.mark.parametrize(
    ("name", "cause"),
    [pytest.param(*b, marks=[pytest.mark.slow] if b[0] in SLOW else []) for b in BUGGY],
    ids=[b[0] for b in BUGGY],
)
def test_buggy_modules_fail_with_their_diagnosis(name, cause):
    report = _check("ws", name, dtypes="float32", kinds="normal,tiny_scale", shapes=["2,5,6,6"])
    assert not report.ok and not report.counts[ERROR]
    assert _causes(report) == {cause}
    if cause == "ws_grad_cut_stats":  # the forward is right, the raw kernel's gradient is not
        assert {r.check for r in report.results if r.status == FAIL} == {"grad_weight"}


def test_a_hard_coded_eps_is_checked_in_the_defaults_call_style_only():
    report = _check("ws", "StandardizedConvHardCoded", eps=1e-10, dtypes="float32", shapes=SMALL)
    assert report.ok and report.counts[PASS] > 0, [r.message for r in report.failing()][:3]
    skips = [r for r in report.results if r.status == SKIP]
    assert skips and all("takes no eps" in r.message for r in skips)
    assert all(r.case.impl.endswith("(defaults)") for r in report.results if r.status == PASS)


def test_a_module_that_is_no_convolution_is_an_error_row_saying_how_it_is_built(tmp_path):
    """A norm module cannot take nn.Conv's fields; a convolution with a parameter of its own
    (a gain) has params normcheck cannot set: each an error row naming what is expected."""
    source = tmp_path / "not_conv.py"
    source.write_text(
        "import flax.linen as nn\n\n\n"
        "class Norm(nn.Module):\n"
        "    epsilon: float = 1e-6\n\n"
        "    def __call__(self, x):\n"
        "        return x\n\n\n"
        "class GainConv(nn.Conv):\n"
        "    eps: float = 1e-6\n\n"
        "    def param(self, name, *args, **kwargs):\n"
        "        p = super().param(name, *args, **kwargs)\n"
        "        if name == 'kernel':\n"
        "            p = p * super().param('gain', nn.initializers.ones, (p.shape[-1],))\n"
        "        return p\n"
    )
    for name, needle in (("Norm", "constructed as flax.linen.Conv is"), ("GainConv", "'gain'")):
        report = _check("ws", name, path=source, dtypes="float32", shapes=SMALL, kinds="normal")
        errors = [r.message for r in report.results if r.status == ERROR]
        assert errors and all(needle in m for m in errors), errors


def test_the_convolution_traces_at_float32_precision():
    """XLA's default on a GPU rounds float32 convolution operands to TF32: the form traces the
    user's convolution (the Flax module's included) under the "highest" matmul precision."""
    jax = require("jax")
    require("jax", "flax")
    from fixtures import flax_ws
    from normcheck.frameworks.jax import forms
    from normcheck.ops import OpParams
    from normcheck.problem import Problem

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 5))
    problem = Problem(
        op="ws",
        shape=x.shape,
        params=OpParams(conv=(4, 3, 1)),
        dtype="float32",
        kind="normal",
        eps=1e-6,
        momentum=0.1,
        x=x,
        dy=rng.standard_normal((2, 4, 5, 5)),
        weight=rng.standard_normal((4, 3, 3, 3)),
        bias=rng.standard_normal(4),
    )
    impl = forms.build("flax_module", "ws", flax_ws.StandardizedConv, "StandardizedConv", omit_defaults=False)
    x_, leaves, _ = forms.ws_inputs(problem, jax.devices("cpu")[0], "channels_last")
    assert leaves["weight"].shape == (3, 3, 3, 4) and x_.shape == (2, 5, 5, 3)
    jaxpr = str(jax.make_jaxpr(impl.ws_forward(problem))(x_, leaves))
    assert "conv_general_dilated" in jaxpr and "HIGHEST" in jaxpr, jaxpr
