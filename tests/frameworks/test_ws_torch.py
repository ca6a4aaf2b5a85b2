"""Weight Standardization end to end in PyTorch: the adapter's composition (timm's StdConv2d) and
the user fixtures of fixtures/ws_layers.py through verify, each buggy one failing with the
diagnosis that names its mistake, each correct one passing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _require import require

import normcheck
from normcheck.errors import UsageError
from normcheck.ops import OPS
from normcheck.reference import reference
from normcheck.verify.inputs import KINDS, make_problem
from normcheck.verify.records import FAIL, KNOWN, SKIP
from normcheck.verify.request import Report

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "ws_layers.py"
FULL = "float32,float64"


def _check(op: str, name: str | None, **options) -> Report:
    impl = None if name is None else f"{FIXTURES}:{name}"
    return normcheck.check(op, impl, framework="torch", jobs=2, **options)


def _causes(report: Report) -> set[str | None]:
    return {r.diagnosis.hypothesis if r.diagnosis else None for r in report.results if r.status == FAIL}


@pytest.mark.parametrize("op", ["ws", "ws_gn"])
def test_the_reference_is_timms_composition_in_float64(op):
    """The reference against timm's F.batch_norm + F.conv2d (+ F.group_norm), float64, every
    default case and kind: the same function to rounding."""
    torch = require("torch")
    import torch.nn.functional as F

    for shape, params in OPS[op].default_cases():
        for kind in KINDS:
            p = make_problem(op, shape, params, "float64", kind, eps=1e-6)
            want = reference(p)
            o, _, pad = params.conv
            x = torch.tensor(p.x, requires_grad=True)
            w = torch.tensor(p.weight, requires_grad=True)
            b = None if p.bias is None else torch.tensor(p.bias, requires_grad=True)
            what = F.batch_norm(w.reshape(1, o, -1), None, None, training=True, momentum=0.0, eps=p.eps)
            y = F.conv2d(x, what.reshape_as(w), b, padding=pad)
            leaves = {"grad_input": x, "grad_weight": w, "grad_bias": b}
            if op == "ws_gn":
                gw, gb = torch.tensor(p.gn_weight, requires_grad=True), torch.tensor(p.gn_bias, requires_grad=True)
                y = F.group_norm(y, params.groups, gw, gb, eps=1e-5)
                leaves.update(grad_gn_weight=gw, grad_gn_bias=gb)
            y.backward(torch.tensor(p.dy))
            got = {"forward": y.detach().numpy(), **{k: t.grad.numpy() for k, t in leaves.items() if t is not None}}
            assert set(got) == set(want)
            # a weight of mean 1e4 and spread 0.01 loses 1e-10 of its deviations to float64's rounding
            close = 1e-6 if kind == "large_mean" else 1e-9
            for check, value in want.items():
                scale = max(1.0, float(np.abs(value).max()))
                np.testing.assert_allclose(got[check], value, rtol=0, atol=close * scale, err_msg=f"{shape} {kind}")


@pytest.mark.slow
def test_the_builtin_passes_and_its_half_rows_are_torchs_documented_defect():
    require("torch")
    report = _check("ws,ws_gn", None, dtypes="float32,float16", kinds="normal,large_mean,constant")
    assert report.ok, [r.message for r in report.failing()][:3]
    known = [r for r in report.results if r.status == KNOWN]
    assert known and all(r.case.dtype == "float16" for r in known)
    assert {r.diagnosis.hypothesis for r in known} == {"ws_stats_in_input_dtype"}  # confirmed, not assumed


def test_a_correct_module_passes_and_the_built_in_on_a_small_grid():
    require("torch")
    report = _check("ws", "StdConv2d", dtypes="float32", shapes=["2,5,6,6"])
    assert report.ok and report.counts["pass"] > 0, [r.message for r in report.failing()][:3]
    assert _check("ws_gn", None, dtypes="float32", shapes=["1,6,5,5"], kinds="normal,tiny_scale").ok


# every default case and input kind (slow: a minute or more each on two cores)
CORRECT = [
    ("ws", "StdConv2d", FULL),
    ("ws", "BiTStdConv2d", FULL),
    ("ws", "std_conv2d", FULL),
    ("ws_gn", "StdConv2d", FULL),
    ("ws", "StdConv2dFloat32", "float32,float16,bfloat16,float64"),
    ("ws_gn", "StdConv2dFloat32", "float16,bfloat16"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("op", "name", "dtypes"), CORRECT, ids=[f"{c[0]}-{c[1]}" for c in CORRECT])
def test_correct_fixtures_pass(op, name, dtypes):
    require("torch")
    report = _check(op, name, dtypes=dtypes)
    assert report.ok, [r.message for r in report.failing()][:3]
    assert report.counts["pass"] > 0


BUGGY = [
    ("StdConv2dPerInputChannel", "ws_axes"),
    ("StdConv2dWholeTensor", "ws_axes"),
    ("std_conv2d_whole_tensor", "ws_axes"),
    ("StdConv2dUnbiased", "ws_unbiased_variance"),
    ("StdConv2dEpsOutside", "ws_eps_place"),
    ("StdConv2dDetached", "ws_grad_cut_stats"),
]


@pytest.mark.parametrize(
    ("name", "cause"),
    [pytest.param(*b, marks=[] if b[0] == "StdConv2dDetached" else [pytest.mark.slow]) for b in BUGGY],
    ids=[b[0] for b in BUGGY],
)
def test_buggy_fixtures_fail_with_their_diagnosis(name, cause):
    require("torch")
    report = _check("ws", name, dtypes="float32", kinds="normal,tiny_scale", shapes=["2,5,6,6"])
    assert not report.ok
    assert _causes(report) == {cause}
    if cause == "ws_grad_cut_stats":  # the forward is right, the raw weight's gradient is not
        assert {r.check for r in report.results if r.status == FAIL} == {"grad_weight"}


@pytest.mark.slow
def test_a_mistake_shows_through_group_norm_too():
    require("torch")
    report = _check("ws_gn", "StdConv2dPerInputChannel", dtypes="float32", kinds="normal")
    assert not report.ok and _causes(report) == {"ws_axes"}


@pytest.mark.slow
def test_the_papers_code_passes_as_the_paper_variant_and_is_named_otherwise():
    require("torch")
    assert _check("ws", "PaperConv2d", variant="paper", eps=1e-5, dtypes=FULL).ok
    report = _check("ws", "PaperConv2d", dtypes="float32", kinds="normal,tiny_scale")
    assert _causes(report) == {"ws_paper_convention"}
    assert all("--variant paper" in r.diagnosis.cause for r in report.results if r.status == FAIL)
    # it takes no eps: the call style that gives one is a skip row saying so, never a failure
    skips = [r for r in report.results if r.status == SKIP]
    assert skips and all("takes no eps" in r.message for r in skips)


@pytest.mark.slow
def test_a_hard_coded_eps_is_checked_against_the_eps_given():
    require("torch")
    assert _check("ws", "BiTStdConv2dHardCoded", eps=1e-10, dtypes="float32").ok
    report = _check("ws", "BiTStdConv2dHardCoded", dtypes="float32", kinds="tiny_scale")
    assert _causes(report) == {"ws_eps_value"}  # BiT's 1e-10 where timm's 1e-6 is expected


@pytest.mark.slow
def test_half_precision_losses_get_their_numeric_cause():
    require("torch")
    report = _check("ws", "StdConv2d", dtypes="float16", kinds="large_mean")
    failing = [r for r in report.results if r.status == FAIL]
    assert failing and {r.diagnosis.hypothesis for r in failing} == {"ws_stats_in_input_dtype"}
    report = _check("ws", "BiTStdConv2d", dtypes="float16", kinds="half_range")
    failing = [r for r in report.results if r.status == FAIL]
    assert failing and all("overflows float16" in r.diagnosis.cause for r in failing)


def test_other_frameworks_are_refused_with_one_line():
    require("torch")
    with pytest.raises(UsageError, match="no framework checked has ws"):
        normcheck.check("ws", framework="onnxruntime")
    # every form of user code takes ws now: a pair that is no convolution fails as its code does
    report = normcheck.check(
        "ws",
        f"{FIXTURES.parent}/cs231n_layers.py:batchnorm_forward",
        backward=f"{FIXTURES.parent}/cs231n_layers.py:batchnorm_backward",
        style="cs231n",
        dtypes="float64",
        kinds="normal",
        jobs=1,
    )
    assert report.results and {r.status for r in report.results} == {"error"}


def test_one_value_per_group_after_the_convolution_is_pytorchs_refusal_not_an_error():
    """F.group_norm refuses N = 1, O/G = 1 and a 1x1 output (batch norm's check on its view):
    a skip saying so, as for group norm itself, not an error row."""
    require("torch")
    report = normcheck.check("ws_gn", framework="torch", shapes=["1,2,1,1"], groups=2, jobs=1, kinds="normal")
    assert report.ok and not report.counts["error"] and report.results
    assert all(r.status == SKIP and "PyTorch refuses" in r.message for r in report.results)
