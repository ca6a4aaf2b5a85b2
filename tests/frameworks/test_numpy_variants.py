"""--style cs231n on adaLN, the fused residual add + layer norm and Weight Standardization
(normcheck.frameworks.numpy.variants), end to end through the Python API on the functions in
fixtures/cs231n_variants.py: each correct pair passes with every check, each buggy one fails
with the diagnosis naming its mistake."""

from __future__ import annotations

import inspect
from collections import Counter

import numpy as np
import pytest

from fixtures import cs231n_variants as variants
from normcheck.api import check
from normcheck.bench.inputs import bench_problem
from normcheck.bench.records import BACKWARD, FORWARD
from normcheck.frameworks import bench_module
from normcheck.frameworks.base import Unsupported
from normcheck.frameworks.numpy.forms import build
from normcheck.ops import OpParams
from normcheck.reference import reference
from normcheck.user import EXPLICIT_EPS, FORMS, UserFramework
from normcheck.verify.local import run
from normcheck.verify.plan import Options, plan

FILE = "fixtures/cs231n_variants.py"
F64 = {"dtypes": "float64", "kinds": "normal"}


def verify(op: str, forward, backward, **options):
    forward = f"{FILE}:{forward}" if isinstance(forward, str) else forward
    backward = f"{FILE}:{backward}" if isinstance(backward, str) else backward
    return check(op, forward, backward=backward, style="cs231n", **options)


def rows(report, status: str | None = None) -> list[dict]:
    return [r for r in report.records if status is None or r["status"] == status]


# -- correct pairs over each op's full default grid -----------------------------------------

CORRECT = {
    "adaln": ("adaln_forward", "adaln_backward", {"grad_input", "grad_scale", "grad_shift"}),
    "add_ln": (
        "add_layernorm_forward",
        "add_layernorm_backward",
        {"residual_out", "grad_input", "grad_residual", "grad_weight", "grad_bias"},
    ),
    "ws": ("ws_conv_forward", "ws_conv_backward", {"grad_input", "grad_weight", "grad_bias"}),
    "ws_gn": ("ws_conv_forward", "ws_conv_backward", {"grad_input", "grad_weight", "grad_gn_weight", "grad_gn_bias"}),
}


@pytest.mark.parametrize("op", list(CORRECT))
def test_correct_pair_passes_the_full_default_grid_with_every_check(op):
    forward, backward, grads = CORRECT[op]
    report = verify(op, forward, backward)  # every default shape, float64 and float32, every input kind
    statuses = Counter(r["status"] for r in report.records)
    assert statuses["fail"] == statuses["error"] == 0, rows(report, "fail")[:2] + rows(report, "error")[:2]
    assert {r["check"] for r in rows(report, "pass")} == {"forward"} | grads
    passed = {(r["dtype"], r["input"]) for r in rows(report, "pass")}
    assert {d for d, _ in passed} == {"float64", "float32"}
    assert {k for _, k in passed} == {"normal", "large_mean", "constant", "tiny_scale", "half_range"}
    assert {r["impl"] for r in rows(report, "pass")} == {forward, f"{forward} (defaults)"}
    assert all(r["message"] for r in rows(report, "skip")), "every skip says why"


def test_the_fused_add_takes_n_by_d_input_as_layernorm_forward():
    report = verify("add_ln", "add_layernorm_forward", "add_layernorm_backward", shapes=[(2, 5, 33)], **F64)
    assert report.records and all(r["status"] == "skip" for r in report.records)
    assert {r["message"] for r in report.records} == {
        "add_layernorm_forward takes (N, D) input in the CS231n convention, as layernorm_forward, not 2x5x33 "
        "(a transformer's (N, L, D) stream is given as (N*L, D))"
    }


# -- each bug is caught and diagnosed -----------------------------------------------------

# (op, forward, backward) -> (the hypothesis named, options that show the bug)
BUGS = {
    ("adaln", "adaln_forward_no_offset", "adaln_backward"): (
        "adaln_offset_missing",
        {"shapes": [(2, 5, 33), (4, 4, 16)], "dtypes": "float64,float32", "kinds": "normal,large_mean"},
    ),
    ("add_ln", "add_layernorm_forward_stale_residual", "add_layernorm_backward_stale_residual"): (
        "residual_not_updated",
        {"shapes": [(4, 16)], "dtypes": "float64,float32", "kinds": "normal,large_mean"},
    ),
    ("ws", "ws_conv_forward", "ws_conv_backward_grad_cut_mean"): (
        "ws_grad_cut_mean",
        {"shapes": [(2, 5, 6, 6)], "dtypes": "float64,float32", "kinds": "normal,tiny_scale"},
    ),
    ("ws_gn", "ws_conv_forward", "ws_conv_backward_grad_cut_mean"): (
        "ws_grad_cut_mean",
        {"shapes": [(2, 4, 6, 6)], "groups": [2], **F64},
    ),
}


@pytest.mark.parametrize("case", list(BUGS), ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
def test_buggy_pair_fails_with_its_diagnosis(case):
    op, forward, backward = case
    hypothesis, options = BUGS[case]
    report = verify(op, forward, backward, **options)
    failing = rows(report, "fail")
    assert failing, f"{case} passed"
    assert not rows(report, "error")
    for r in failing:
        assert r["diagnosis"] and r["diagnosis"]["hypothesis"] == hypothesis, (r["check"], r["diagnosis"])


def test_a_stale_residual_with_the_correct_backward_still_fails_on_residual_out():
    report = verify("add_ln", "add_layernorm_forward_stale_residual", "add_layernorm_backward", shapes=[(4, 16)], **F64)
    assert {r["check"] for r in rows(report, "fail")} == {"residual_out"}
    assert {r["diagnosis"]["hypothesis"] for r in rows(report, "fail")} == {"residual_not_updated"}


def test_every_fixture_is_tested_and_says_what_it_does():
    tested = {name for case in BUGS for name in case[1:]} | {name for f, b, _ in CORRECT.values() for name in (f, b)}
    tested.add("add_layernorm_backward")
    public = {
        name: f
        for name, f in vars(variants).items()
        if inspect.isfunction(f) and f.__module__ == variants.__name__ and not name.startswith("_")
    }
    assert set(public) == tested
    bugs = {n for n in public if n.endswith(("_no_offset", "_stale_residual", "_grad_cut_mean"))}
    for name, f in public.items():
        assert f.__doc__.startswith("Bug: " if name in bugs else "Correct: "), name


# -- the two call styles, and what the style has not ------------------------------------------

CALLS: list[dict] = []


def adaln_forward_spy(x, shift, scale, ln_param):
    CALLS.append(dict(ln_param))
    return variants.adaln_forward(x, shift, scale, ln_param)


def ws_conv_forward_spy(x, w, b, conv_param):
    CALLS.append(dict(conv_param))
    return variants.ws_conv_forward(x, w, b, conv_param)


@pytest.mark.parametrize(
    ("op", "forward", "backward", "shape", "always"),
    [
        ("adaln", adaln_forward_spy, variants.adaln_backward, (2, 5, 33), [{}]),
        # a user's shape runs a 3x3 convolution with padding 1 and a 1x1 one
        ("ws", ws_conv_forward_spy, variants.ws_conv_backward, (2, 3, 6, 6), [{"stride": 1, "pad": p} for p in (1, 0)]),
    ],
)
def test_the_explicit_style_gives_eps_in_the_param_dict_and_the_defaults_style_leaves_it_out(
    op, forward, backward, shape, always
):
    CALLS.clear()
    report = verify(op, forward, backward, shapes=[shape], **F64)
    assert report.ok and rows(report, "pass")
    params = {tuple(sorted(p.items())) for p in CALLS}
    styles = [{**a, "eps": EXPLICIT_EPS} for a in always] + always
    assert params == {tuple(sorted(p.items())) for p in styles}


def adaln_forward_ln_eps(x, shift, scale, ln_param):
    """Bug: the default eps is the assignment's layer norm's 1e-5, not DiT's 1e-6."""
    return variants.adaln_forward(x, shift, scale, {"eps": 1e-5, **ln_param})


def test_the_defaults_style_holds_adaln_to_dits_eps():
    report = verify("adaln", adaln_forward_ln_eps, variants.adaln_backward, shapes=[(2, 5, 33)], dtypes="float64")
    failing = rows(report, "fail")
    assert failing and {r["impl"] for r in failing} == {"adaln_forward_ln_eps (defaults)"}


def test_without_a_backward_only_the_gradients_are_skipped():
    forward = variants.add_layernorm_forward
    fws = [UserFramework(FORMS["cs231n"], forward, "add_layernorm_forward", omit) for omit in (False, True)]
    opts = Options(ops=("add_ln",), dtypes=("float64",), kinds=("normal",), shapes=((4, 16),))
    results = list(run(plan(opts, fws), opts))
    assert {(r.check, r.status) for r in results if r.status != "skip"} == {
        ("forward", "pass"),
        ("residual_out", "pass"),
    }
    skipped = [r for r in results if r.status == "skip"]
    assert {r.check for r in skipped} == {"grad_input", "grad_residual", "grad_weight", "grad_bias"}
    assert {r.message for r in skipped} == {"no backward function was given"}


def test_there_is_no_rms_norm_nor_fused_add_rms_norm():
    """The CS231n convention declares no RMS norm (normcheck.frameworks.numpy.facts)."""
    for op in ("rms", "add_rms"):
        assert build("cs231n", op, variants.add_layernorm_forward, "f", False, variants.add_layernorm_backward) is None
        fw = UserFramework(FORMS["cs231n"], variants.add_layernorm_forward, "f", False, variants.add_layernorm_backward)
        assert fw.implementations(op) == []


def ws_backward_short(dout, cache):
    return variants.ws_conv_backward(dout, cache)[:2]


def adaln_backward_transposed(dout, cache):
    dx, dshift, dscale = variants.adaln_backward(dout, cache)
    return dx, dshift.T, dscale


@pytest.mark.parametrize(
    ("op", "forward", "backward", "shape", "message"),
    [
        (
            "ws",
            variants.ws_conv_forward,
            ws_backward_short,
            (2, 3, 6, 6),
            "ValueError: ws_backward_short returned 2 values; the CS231n convention returns (dx, dw, db)",
        ),
        (
            "adaln",
            variants.adaln_forward,
            adaln_backward_transposed,
            (2, 5, 33),
            "ValueError: adaln_backward_transposed returned dshift of shape (33, 2), expected (2, 33) or (2, 1, 33)",
        ),
    ],
)
def test_a_malformed_return_is_an_error_row_that_says_what_came_back(op, forward, backward, shape, message):
    report = verify(op, forward, backward, shapes=[shape], **F64)
    errors = rows(report, "error")
    assert errors and not rows(report, "fail")
    assert {r["message"] for r in errors} == {message}


# -- bench times the pairs --------------------------------------------------------------------

target = bench_module("numpy")
BENCH = {
    "adaln": ((2, 5, 33), OpParams()),
    "add_ln": ((4, 16), OpParams(normalized_ndim=1)),
    "ws": ((2, 3, 6, 6), OpParams(conv=(4, 3, 1))),
    "ws_gn": ((2, 3, 6, 6), OpParams(conv=(4, 3, 1), groups=2)),
}


@pytest.mark.parametrize("op", list(BENCH))
def test_bench_times_the_pair_as_verify_calls_it(op):
    forward, backward, _ = CORRECT[op]
    impl = build("cs231n", op, getattr(variants, forward), forward, False, getattr(variants, backward))
    problem = bench_problem(op, *BENCH[op], "float32")
    expected = reference(problem)
    outputs, _ = target.build(impl, problem, FORWARD, "eager", "cpu").call()
    grads = target.build(impl, problem, BACKWARD, "eager", "cpu").call()
    for name, value in {**outputs, **grads}.items():
        assert value.dtype == np.float32, name
        np.testing.assert_allclose(value, expected[name], rtol=1e-3, atol=1e-3, err_msg=name)


def test_bench_refuses_the_backward_pass_without_a_backward():
    impl = build("cs231n", "adaln", variants.adaln_forward, "adaln_forward", False, None)
    with pytest.raises(Unsupported, match="no backward function"):
        target.build(impl, bench_problem("adaln", *BENCH["adaln"], "float32"), BACKWARD, "eager", "cpu")
