"""--style cs231n: NumPy forward/backward pairs in the CS231n assignment-2 convention, checked
end to end through the Python API on the functions in fixtures/cs231n_layers.py."""

from __future__ import annotations

import inspect
from collections import Counter

import numpy as np
import pytest

from fixtures import cs231n_layers as layers
from normcheck.api import check
from normcheck.frameworks.numpy.forms import build
from normcheck.user import EXPLICIT_EPS, EXPLICIT_MOMENTUM, FORMS, UserFramework
from normcheck.verify.local import run
from normcheck.verify.plan import Options, plan

FILE = "fixtures/cs231n_layers.py"
F64 = {"dtypes": "float64", "kinds": "normal"}


def spec(name: str) -> str:
    return f"{FILE}:{name}"


def verify(op: str, forward, backward, **options):
    """The report of a pair given as fixture names (SPEC strings) or as the functions themselves."""
    forward = spec(forward) if isinstance(forward, str) else forward
    backward = spec(backward) if isinstance(backward, str) else backward
    return check(op, forward, backward=backward, style="cs231n", **options)


def rows(report, status: str | None = None, check_name: str | None = None) -> list[dict]:
    return [
        r
        for r in report.records
        if (status is None or r["status"] == status) and (check_name is None or r["check"] == check_name)
    ]


# -- correct pairs over each op's full default grid -----------------------------------

CORRECT = {
    "batchnorm_forward": ("bn", "batchnorm_backward"),
    "spatial_batchnorm_forward": ("bn", "spatial_batchnorm_backward"),
    "layernorm_forward": ("ln", "layernorm_backward"),
    "spatial_groupnorm_forward": ("gn", "spatial_groupnorm_backward"),
}


@pytest.mark.parametrize("forward", list(CORRECT))
def test_correct_pair_passes_the_full_default_grid(forward):
    op, backward = CORRECT[forward]
    report = verify(op, forward, backward)  # every default shape, dtype and input kind
    statuses = Counter(r["status"] for r in report.records)
    assert statuses["fail"] == statuses["error"] == 0, [r for r in report.records if r["status"] in ("fail", "error")]
    assert all(r["message"] for r in rows(report, "skip")), "every skip says why"
    passed = {(r["dtype"], r["input"]) for r in rows(report, "pass")}
    assert {d for d, _ in passed} == {"float64", "float32"}  # NumPy forms' defaults: no half rows
    assert {r["dtype"] for r in report.records} == {"float64", "float32"}
    assert {k for _, k in passed} == {"normal", "large_mean", "constant", "tiny_scale", "half_range"}
    assert {r["impl"] for r in rows(report, "pass")} == {forward, f"{forward} (defaults)"}


# correct formulas in the input's own dtype, as a student writes them
TEXTBOOK = {
    "layernorm_forward_textbook": ("ln", "layernorm_backward_textbook"),
    "spatial_groupnorm_forward_textbook": ("gn", "spatial_groupnorm_backward_textbook"),
    "batchnorm_forward_textbook": ("bn", "batchnorm_backward_textbook"),
}


@pytest.mark.parametrize("forward", list(TEXTBOOK))
def test_textbook_code_passes_by_default_and_its_half_rows_name_no_formula_mistake(forward):
    op, backward = TEXTBOOK[forward]
    report = verify(op, forward, backward)  # float64 and float32: NumPy forms' defaults
    assert not rows(report, "fail") and not rows(report, "error"), rows(report, "fail")[:2]
    half = verify(op, forward, backward, dtypes="float16")
    assert rows(half, "fail"), "float16 arithmetic loses accuracy a float32 kernel keeps"
    for r in rows(half, "fail"):
        d = r["diagnosis"]
        assert d["family"] != "formula", d["summary"]  # a precision cause, or none


def test_correct_outputs_keep_the_input_dtype():
    x = np.random.default_rng(0).standard_normal((2, 6, 3, 3)).astype(np.float16)
    gamma, beta = np.ones((1, 6, 1, 1), np.float16), np.zeros((1, 6, 1, 1), np.float16)
    out, cache = layers.spatial_groupnorm_forward(x, gamma, beta, 3, {})
    dx, dgamma, dbeta = layers.spatial_groupnorm_backward(np.ones_like(x), cache)
    assert out.dtype == dx.dtype == dgamma.dtype == np.float16
    assert dgamma.shape == dbeta.shape == (1, 6, 1, 1)


# -- each bug is caught and diagnosed -------------------------------------------------

# (forward, backward) -> (expected hypothesis, op, options that show the bug clearly)
BUGS = {
    ("batchnorm_forward_unbiased", "batchnorm_backward"): ("unbiased_variance", "bn", {"shapes": [(8, 5)], **F64}),
    ("batchnorm_forward_momentum_inverted", "batchnorm_backward"): (
        "momentum_inverted",
        "bn",
        {"shapes": [(8, 5)], **F64},
    ),
    ("batchnorm_forward_eval_batch_stats", "batchnorm_backward"): (
        "eval_batch_stats",
        "bn",
        {"shapes": [(8, 5)], **F64},
    ),
    ("batchnorm_forward", "batchnorm_backward_grad_cut_variance"): (
        "grad_cut_variance",
        "bn",
        {"shapes": [(8, 5)], **F64},
    ),
    ("spatial_batchnorm_forward_running_var_unbiased", "spatial_batchnorm_backward"): (
        "running_var_unbiased",
        "bn",
        {"shapes": [(1, 4, 3, 3)], **F64},
    ),
    ("layernorm_forward_eps_outside_sqrt", "layernorm_backward"): (
        "eps_outside_sqrt",
        "ln",
        {"shapes": [(4, 16)], "dtypes": "float64", "kinds": "tiny_scale"},
    ),
    ("layernorm_forward_half_accumulation", "layernorm_backward"): (
        "half_accumulation",
        "ln",
        {"shapes": [(4, 16)], "dtypes": "float16", "kinds": "half_range"},
    ),
    ("spatial_groupnorm_forward_groups_interleaved", "spatial_groupnorm_backward"): (
        "groups_interleaved",
        "gn",
        {"shapes": [(2, 6, 5, 5)], "groups": [2], **F64},
    ),
}


@pytest.mark.parametrize(("pair", "expected"), [(pair, v[0]) for pair, v in BUGS.items()], ids=lambda p: str(p))
def test_buggy_pair_fails_with_its_diagnosis(pair, expected):
    _, op, options = BUGS[pair]
    report = verify(op, *pair, **options)
    failing = rows(report, "fail")
    assert failing, f"{pair} passed"
    found = {r["diagnosis"]["hypothesis"] for r in failing if r["diagnosis"]}
    assert expected in found, found


def test_every_buggy_fixture_is_tested_and_every_function_says_what_it_does():
    bugs = {name for pair in BUGS for name in pair if "_forward_" in name or "_backward_" in name}
    assert len(bugs) == len(BUGS)
    public = [
        f
        for name, f in vars(layers).items()
        if inspect.isfunction(f) and f.__module__ == layers.__name__ and not name.startswith("_")
    ]
    correct = {**CORRECT, **TEXTBOOK}
    assert {f.__name__ for f in public} == bugs | set(correct) | {b for _, b in correct.values()}
    for f in public:
        assert f.__doc__.startswith("Bug: " if f.__name__ in bugs else "Correct: "), f.__name__


def test_the_buggy_pair_passes_where_its_bug_cannot_show():
    # G = 1 and G = C: interleaved and contiguous groups are the same groups
    report = verify(
        "gn",
        "spatial_groupnorm_forward_groups_interleaved",
        "spatial_groupnorm_backward",
        shapes=[(2, 6, 5, 5)],
        groups=[1, 6],
        **F64,
    )
    assert report.ok and rows(report, "pass")


# -- which inputs each function takes ------------------------------------------------------


def spatial_bn(x, gamma, beta, bn_param):
    return layers.spatial_batchnorm_forward(x, gamma, beta, bn_param)


@pytest.mark.parametrize(
    ("op", "forward", "backward", "options", "reason"),
    [
        (
            "bn",
            "batchnorm_forward",
            "batchnorm_backward",
            {"shapes": [(2, 3, 4, 5)]},
            "batchnorm_forward takes (N, D) input in the CS231n convention, not 2x3x4x5; "
            "(N, C, H, W) batch norm takes a function named spatial_*",
        ),
        (
            "bn",
            "batchnorm_forward",
            "batchnorm_backward",
            {"shapes": [(2, 3, 4)]},
            "batchnorm_forward takes (N, D) input in the CS231n convention, not 2x3x4",
        ),
        (
            "bn",
            "spatial_batchnorm_forward",
            "spatial_batchnorm_backward",
            {"shapes": [(8, 5)]},
            "spatial_batchnorm_forward takes (N, C, H, W) input in the CS231n convention, not 8x5; "
            "(N, D) batch norm takes one without 'spatial' in its name",
        ),
        (
            "ln",
            "layernorm_forward",
            "layernorm_backward",
            {"shapes": [(2, 3, 4)], "normalized_ndim": [1]},
            "layernorm_forward takes (N, D) input in the CS231n convention, not 2x3x4",
        ),
        (
            "ln",
            "layernorm_forward",
            "layernorm_backward",
            {"shapes": [(4, 6)], "normalized_ndim": [2]},
            "layernorm_forward normalizes each row of (N, D) over D; it cannot normalize the last 2 dims of 4x6",
        ),
        (
            "gn",
            "spatial_groupnorm_forward",
            "spatial_groupnorm_backward",
            {"shapes": [(2, 6, 5)], "groups": [3]},
            "spatial_groupnorm_forward takes (N, C, H, W) input in the CS231n convention, not 2x6x5",
        ),
    ],
)
def test_inputs_of_another_rank_are_skipped_with_the_reason(op, forward, backward, options, reason):
    report = verify(op, forward, backward, dtypes="float32", kinds="normal", **options)
    assert report.records and all(r["status"] == "skip" for r in report.records)
    assert {r["message"] for r in report.records} == {reason}


def test_a_forward_named_spatial_takes_4d_input():
    report = verify("bn", spatial_bn, layers.spatial_batchnorm_backward, shapes=[(2, 3, 4, 5)], **F64)
    assert report.ok and rows(report, "pass")


def test_there_is_no_instance_or_rms_norm():
    for op in ("in", "rms"):
        assert build("cs231n", op, layers.layernorm_forward, "f", False, layers.layernorm_backward) is None
        fw = UserFramework(FORMS["cs231n"], layers.layernorm_forward, "f", False, layers.layernorm_backward)
        assert fw.implementations(op) == []


# -- what comes back from the backward ----------------------------------------------------


def groupnorm_backward_flat(dout, cache):
    dx, dgamma, dbeta = layers.spatial_groupnorm_backward(dout, cache)
    return dx, dgamma.reshape(-1), dbeta.reshape(-1)


def batchnorm_backward_row(dout, cache):
    dx, dgamma, dbeta = layers.batchnorm_backward(dout, cache)
    return dx, dgamma.reshape(1, -1), dbeta.reshape(1, -1)


def groupnorm_backward_short(dout, cache):
    dx, dgamma, dbeta = layers.spatial_groupnorm_backward(dout, cache)
    return dx, dgamma.reshape(-1)[:-1], dbeta


def batchnorm_backward_two(dout, cache):
    return layers.batchnorm_backward(dout, cache)[:2]


def batchnorm_forward_out_only(x, gamma, beta, bn_param):
    return layers.batchnorm_forward(x, gamma, beta, bn_param)[0]


@pytest.mark.parametrize(
    ("op", "forward", "backward", "shape"),
    [
        ("gn", layers.spatial_groupnorm_forward, groupnorm_backward_flat, (2, 6, 5, 5)),
        ("bn", layers.batchnorm_forward, batchnorm_backward_row, (8, 5)),
    ],
)
def test_dgamma_and_dbeta_in_either_shape(op, forward, backward, shape):
    report = verify(op, forward, backward, shapes=[shape], **F64)
    assert report.ok
    assert len(rows(report, "pass", "grad_weight")) == len(rows(report, "pass", "grad_bias")) > 0


@pytest.mark.parametrize(
    ("op", "forward", "backward", "message"),
    [
        (
            "gn",
            layers.spatial_groupnorm_forward,
            groupnorm_backward_short,
            "ValueError: groupnorm_backward_short returned dgamma of shape (5,), expected (1, 6, 1, 1) or (6,)",
        ),
        (
            "bn",
            layers.batchnorm_forward,
            batchnorm_backward_two,
            "ValueError: batchnorm_backward_two returned 2 values; the CS231n convention returns (dx, dgamma, dbeta)",
        ),
        (
            "bn",
            batchnorm_forward_out_only,
            layers.batchnorm_backward,
            "ValueError: batchnorm_forward_out_only returned a ndarray; the CS231n convention returns (out, cache)",
        ),
    ],
)
def test_a_malformed_return_is_an_error_row_that_says_what_came_back(op, forward, backward, message):
    shape = (2, 6, 5, 5) if op == "gn" else (8, 5)
    report = verify(op, forward, backward, shapes=[shape], **F64)
    errors = rows(report, "error")
    assert errors and not rows(report, "fail")
    assert {r["message"] for r in errors} == {message}


# -- the two call styles -----------------------------------------------------------------

CALLS: list[tuple[dict, tuple[int, ...], float, float]] = []


def batchnorm_forward_spy(x, gamma, beta, bn_param):
    CALLS.append((dict(bn_param), gamma.shape, float(gamma.ravel()[0]), float(beta.ravel()[0])))
    return layers.batchnorm_forward(x, gamma, beta, bn_param)


def test_omit_defaults_leaves_out_eps_and_momentum_and_passes_ones_and_zeros():
    CALLS.clear()
    report = verify("bn", batchnorm_forward_spy, layers.batchnorm_backward, shapes=[(8, 5)], **F64)
    assert report.ok
    explicit = [c for c in CALLS if "eps" in c[0]]
    defaults = [c for c in CALLS if "eps" not in c[0]]
    # per style: 2 earlier batches then x in train mode, 3 earlier batches then x in test mode
    assert len(explicit) == len(defaults) == 7
    for param, *_ in explicit:
        assert param["eps"] == EXPLICIT_EPS
        assert param["momentum"] == pytest.approx(1 - EXPLICIT_MOMENTUM)  # the old value's weight
    for param, gamma_shape, gamma, beta in defaults:
        assert "momentum" not in param and (gamma_shape, gamma, beta) == ((5,), 1.0, 0.0)
    for param, *_ in CALLS:
        assert param["mode"] in ("train", "test") and param["running_mean"].shape == (5,)
    # affine off in the defaults style: no dgamma/dbeta is checked there
    weights = rows(report, None, "grad_weight")
    assert weights and all(not r["impl"].endswith("(defaults)") for r in weights)
    assert all(r["params"].endswith("no-affine") for r in report.records if r["impl"].endswith("(defaults)"))


def batchnorm_forward_keras_momentum(x, gamma, beta, bn_param):
    """Bug: the default momentum is Keras's 0.99, not the assignment's 0.9."""
    bn_param.setdefault("momentum", 0.99)
    return layers.batchnorm_forward(x, gamma, beta, bn_param)


def layernorm_forward_fixed_eps(x, gamma, beta, ln_param):
    """Bug: ignores ln_param's eps and always uses 1e-5."""
    return layers.layernorm_forward(x, gamma, beta, {})


@pytest.mark.parametrize(
    ("op", "forward", "backward", "options", "failing_style"),
    [
        (
            "bn",
            batchnorm_forward_keras_momentum,
            layers.batchnorm_backward,
            {"shapes": [(8, 5)], **F64},
            "batchnorm_forward_keras_momentum (defaults)",
        ),
        (
            "ln",
            layernorm_forward_fixed_eps,
            layers.layernorm_backward,
            {"shapes": [(4, 16)], "dtypes": "float64", "kinds": "tiny_scale"},
            "layernorm_forward_fixed_eps",
        ),
    ],
)
def test_each_style_catches_what_only_it_can(op, forward, backward, options, failing_style):
    report = verify(op, forward, backward, **options)
    assert {r["impl"] for r in rows(report, "fail")} == {failing_style}


def test_eval_mode_gradients_are_skipped_with_the_reason():
    report = verify("bn", "batchnorm_forward", "batchnorm_backward", shapes=[(8, 5)], **F64)
    evals = [r for r in report.records if "eval" in r["params"]]
    grads = [r for r in evals if r["check"].startswith("grad_")]
    assert grads and all(r["status"] == "skip" and "training mode only" in r["message"] for r in grads)
    assert {r["check"] for r in evals if r["status"] == "pass"} == {"forward", "running_mean", "running_var"}


def test_without_a_backward_only_the_gradients_are_skipped():
    fws = [UserFramework(FORMS["cs231n"], layers.layernorm_forward, "layernorm_forward", omit) for omit in (0, 1)]
    opts = Options(ops=("ln",), dtypes=("float64",), kinds=("normal",), shapes=((4, 16),))
    results = list(run(plan(opts, fws), opts))
    assert {(r.check, r.status) for r in results} == {
        ("forward", "pass"),
        *((c, "skip") for c in ("grad_input", "grad_weight", "grad_bias")),
    }
    assert {r.message for r in results if r.status == "skip"} == {"no backward function was given"}
