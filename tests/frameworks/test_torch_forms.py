"""The PyTorch user forms: functions with a torch.nn.functional signature and nn.Module subclasses
with a torch.nn constructor, checked end to end through normcheck.api in both call styles."""

from __future__ import annotations

from dataclasses import replace

import pytest
from _forms import ALL_DTYPES, CORRECT_FUNCTIONS, DEFAULTS, FIXTURES, assert_diagnosed, bad_rows, spec, styles
from _require import require

torch = require("torch")

from torch import nn

from fixtures import torch_functional as tf
from fixtures import torch_modules as tm
from normcheck.api import check
from normcheck.frameworks import CONVENTIONS
from normcheck.frameworks.torch.forms import constructor_call, function_call, rank_problem
from normcheck.ops import OpParams
from normcheck.user import EXPLICIT_EPS, EXPLICIT_MOMENTUM
from normcheck.verify.inputs import KINDS, make_problem
from normcheck.verify.records import ERROR, FAIL, PASS, RUN, SKIP

FUNCTIONS = FIXTURES / "torch_functional.py"
MODULES = FIXTURES / "torch_modules.py"

CORRECT_MODULES = {"gn": "GroupNorm", "ln": "LayerNorm", "bn": "BatchNorm2d", "in": "InstanceNorm2d", "rms": "RMSNorm"}

# fixture: (op, expected hypothesis, dtype, input kind, shape where the bug shows clearly)
GN, LN, BN, IN, RMS = (2, 6, 5, 5), (2, 3, 7, 9), (2, 3, 5, 5), (3, 4, 5, 5), (2, 5, 33)
BUGGY_MODULES = {
    "GroupNormGradCutVariance": ("gn", "grad_cut_variance", "float32", "normal", GN),
    "GroupNormAffineOrder": ("gn", "affine_order", "float32", "normal", GN),
    "LayerNormEpsValue": ("ln", "eps_value", "float32", "tiny_scale", LN),
    "BatchNorm2dMomentumInverted": ("bn", "momentum_inverted", "float32", "normal", BN),
    "BatchNorm2dRunningVarBiased": ("bn", "running_var_biased", "float32", "normal", BN),
    "BatchNorm2dEvalBatchStats": ("bn", "eval_batch_stats", "float32", "normal", BN),
    "InstanceNorm2dEpsMissing": ("in", "eps_missing", "float32", "tiny_scale", IN),
    "RMSNormMeanSubtracted": ("rms", "mean_subtracted", "float32", "normal", RMS),
    "RMSNormHalfAccumulation": ("rms", "half_accumulation", "float16", "half_range", RMS),
}
BUGGY_FUNCTIONS = {
    "group_norm_unbiased_var": ("gn", "unbiased_variance", "float32", "normal", GN),
    "group_norm_eps_outside_sqrt": ("gn", "eps_outside_sqrt", "float32", "tiny_scale", GN),
    "group_norm_one_pass": ("gn", "one_pass_variance", "float32", "large_mean", GN),
    "group_norm_channels_interleaved": ("gn", "groups_interleaved", "float32", "normal", GN),
    "layer_norm_last_axis_only": ("ln", "axes_last_only", "float32", "normal", LN),
    "batch_norm_momentum_inverted": ("bn", "momentum_inverted", "float32", "normal", BN),
    "batch_norm_biased_running_var": ("bn", "running_var_biased", "float32", "normal", BN),
    "batch_norm_eval_uses_batch_stats": ("bn", "eval_batch_stats", "float32", "normal", BN),
    "rms_norm_mean_subtracted": ("rms", "mean_subtracted", "float32", "normal", RMS),
    "instance_norm_as_batch_norm": ("in", "axes_batch_included", "float32", "normal", IN),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tensors here are tiny: extra threads only contend with each other on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def function(name: str) -> str:
    return spec(FUNCTIONS, name)


def module(name: str) -> str:
    return spec(MODULES, name)


# -- correct code passes ----------------------------------------------------------------


@pytest.mark.parametrize("op", CORRECT_MODULES)
def test_correct_module_passes_the_full_default_grid(op):
    report = check(op, module(CORRECT_MODULES[op]), dtypes=ALL_DTYPES)
    assert bad_rows(report) == []
    assert styles(report) == {False, True}
    assert {r["dtype"] for r in report.records} == set(ALL_DTYPES)
    assert {r["input"] for r in report.records} == set(KINDS)
    assert {r["layout"] for r in report.records if r["status"] == PASS} == {"contiguous", "channels_last"}


@pytest.mark.parametrize("op", CORRECT_FUNCTIONS)
def test_correct_function_passes_the_default_shapes(op):
    # tests/frameworks/test_torch_adapter.py checks these functions in every dtype through the same binder
    report = check(op, function(CORRECT_FUNCTIONS[op]), framework="torch", dtypes=("float32", "float16"))
    assert bad_rows(report) == []
    assert styles(report) == {False, True}
    passed = {r["check"] for r in report.records if r["status"] == PASS}
    want = {"forward", "grad_input", "grad_weight"} | (set() if op == "rms" else {"grad_bias"})
    if op in ("bn", "in"):
        want |= {"running_mean", "running_var"}
    assert passed == want


# -- buggy code fails, with the diagnosis of its bug ---------------------------------------


@pytest.mark.parametrize("name", BUGGY_MODULES)
def test_buggy_module_fails_with_its_diagnosis(name):
    op, hypothesis, dtype, kind, shape = BUGGY_MODULES[name]
    assert_diagnosed(check(op, module(name), dtypes=dtype, kinds=kind, shapes=[shape]), hypothesis)


@pytest.mark.parametrize("name", BUGGY_FUNCTIONS)
def test_buggy_function_fails_with_its_diagnosis(name):
    op, hypothesis, dtype, kind, shape = BUGGY_FUNCTIONS[name]
    report = check(op, function(name), framework="torch", dtypes=dtype, kinds=kind, shapes=[shape])
    assert_diagnosed(report, hypothesis)


@pytest.mark.slow
def test_the_quick_profile_catches_every_buggy_fixture_and_passes_the_correct_ones():
    """--profile quick runs a few cases of each op: every buggy module and function still fails
    with its own diagnosis among its rows, and the correct modules pass (one engine for all)."""
    from normcheck.engine.jobs import plan_request, run_plan
    from normcheck.engine.pool import Engine
    from normcheck.verify.request import Request

    runs = [
        (name, hyp, Request(ops=op, impl=module(name), profile="quick"))
        for name, (op, hyp, *_) in BUGGY_MODULES.items()
    ]
    runs += [
        (name, hyp, Request(ops=op, impl=function(name), frameworks="torch", profile="quick"))
        for name, (op, hyp, *_) in BUGGY_FUNCTIONS.items()
    ]
    runs += [(name, None, Request(ops=op, impl=module(name), profile="quick")) for op, name in CORRECT_MODULES.items()]
    missed = []
    with Engine(None) as engine:
        for name, hypothesis, request in runs:
            report = run_plan(engine, plan_request(engine, request))
            failing = [r for r in report.records if r["status"] in (FAIL, ERROR)]
            named = {r["diagnosis"]["hypothesis"] for r in failing if r["diagnosis"]}
            if (hypothesis is None and failing) or (hypothesis is not None and hypothesis not in named):
                missed.append((name, hypothesis, len(failing), sorted(n for n in named if n)))
    assert not missed


# the right formula in half-precision arithmetic: a precision cause on its half rows, never a formula one
IN_INPUT_DTYPE = {"GroupNormInInputDtype": ("gn", GN), "LayerNormInInputDtype": ("ln", LN)}


@pytest.mark.parametrize("name", list(IN_INPUT_DTYPE))
def test_half_precision_arithmetic_is_never_given_a_formula_cause(name):
    op, shape = IN_INPUT_DTYPE[name]
    report = check(op, module(name), shapes=[shape], kinds="normal,large_mean,tiny_scale,half_range")
    failing = [r for r in report.records if r["status"] == "fail"]
    assert not [r for r in failing if r["dtype"] in ("float32", "float64")]
    half = [r for r in failing if r["dtype"] in ("float16", "bfloat16")]
    assert half, "half arithmetic loses accuracy torch's kernels keep"
    assert all((r["diagnosis"] or {}).get("family") != "formula" for r in half), [r["diagnosis"] for r in half][:2]


def test_detached_statistics_fail_the_input_gradient_only():
    # both the mean and the variance are cut, which no single hypothesis reproduces
    report = check(
        "gn", function("group_norm_detached_stats"), framework="torch", dtypes="float32", kinds="normal", shapes=[GN]
    )
    assert {r["check"] for r in report.records if r["status"] == FAIL} == {"grad_input"}


# -- the call styles -----------------------------------------------------------------------


def group_norm_eps_required(input, num_groups, weight=None, bias=None, *, eps):
    """Correct, but eps has no default: the defaults style cannot call it."""
    return tf.group_norm(input, num_groups, weight, bias, eps=eps)


def test_function_without_an_eps_default_errors_in_the_defaults_style_only():
    report = check("gn", group_norm_eps_required, framework="torch", dtypes="float32", kinds="normal")
    explicit = [r for r in report.records if not r["impl"].endswith(DEFAULTS)]
    defaults = [r for r in report.records if r["impl"].endswith(DEFAULTS)]
    assert explicit and {r["status"] for r in explicit} == {PASS}
    assert defaults and {(r["check"], r["status"]) for r in defaults} == {(RUN, ERROR)}
    assert all(r["message"].startswith("TypeError: ") and "'eps'" in r["message"] for r in defaults)


def test_module_with_a_wrong_default_eps_fails_in_the_defaults_style_only():
    report = check("ln", module("LayerNormEpsValue"), dtypes="float32", kinds="tiny_scale")
    by_style = {
        style: {r["status"] for r in report.records if r["impl"].endswith(DEFAULTS) == style} for style in (False, True)
    }
    assert by_style == {False: {PASS}, True: {FAIL}}


class Recorder:
    """Records the arguments each call received."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple, dict]] = []


def test_function_calls_leave_out_exactly_the_defaults():
    seen = Recorder()

    def batch_norm(*args, **kwargs):
        seen.calls.append((len(args), tuple(sorted(kwargs.items()))))
        return tf.batch_norm(*args, **kwargs)

    report = check("bn", batch_norm, framework="torch", shapes=[(2, 3, 5, 5)], dtypes="float32", kinds="normal")
    assert bad_rows(report) == []
    given = (("eps", EXPLICIT_EPS), ("momentum", EXPLICIT_MOMENTUM))  # no framework's defaults
    assert set(seen.calls) == {
        (5, (*given, ("training", True))),  # explicit: input, running stats, weight, bias; every option
        (5, (*given, ("training", False))),
        (3, (("training", True),)),  # defaults, training: no weight or bias, training=True
        (3, ()),  # defaults, evaluation: training=False is the default
    }


def test_function_call_arguments_per_op():
    x = torch.zeros(3, 4, 5, 5)
    p = _problem("in", (3, 4, 5, 5), OpParams(mode="eval", running_stats=True), omit=True)
    assert function_call(p, x, False, None, None, "rm", "rv", omit_defaults=True) == (
        [x, "rm", "rv"],
        {"use_input_stats": False},
    )
    p = _problem("in", (3, 4, 5, 5), OpParams(), omit=True)
    assert function_call(p, x, True, None, None, None, None, omit_defaults=True) == ([x], {})
    p = _problem("rms", (3, 4, 5, 5), OpParams(normalized_ndim=2))
    assert function_call(p, x, True, "w", None, None, None, omit_defaults=False) == (
        [x, (5, 5), "w"],
        {"eps": EXPLICIT_EPS},
    )


def _problem(op, shape, params, omit=False):
    """A case in the explicit style, or (``omit``) in the defaults style: no affine, PyTorch's eps and momentum."""
    if not omit:
        return make_problem(op, shape, params, "float32", "normal", eps=EXPLICIT_EPS, momentum=EXPLICIT_MOMENTUM)
    eps = CONVENTIONS["torch"][op].default_eps("float32")
    return make_problem(op, shape, replace(params, affine=False), "float32", "normal", eps=eps, momentum=0.1)


@pytest.mark.parametrize(
    ("op", "shape", "params", "explicit", "defaults"),
    [
        (
            "gn",
            (2, 6, 5, 5),
            OpParams(groups=3),
            ([3, 6], {"eps": EXPLICIT_EPS, "affine": True}),
            ([3, 6], {"affine": False}),
        ),
        (
            "ln",
            (2, 3, 7, 9),
            OpParams(normalized_ndim=2),
            ([(7, 9)], {"eps": EXPLICIT_EPS, "elementwise_affine": True}),
            ([(7, 9)], {"elementwise_affine": False}),
        ),
        (
            "bn",
            (2, 3, 5, 5),
            OpParams(mode="eval", running_stats=True),
            ([3], {"eps": EXPLICIT_EPS, "momentum": EXPLICIT_MOMENTUM, "affine": True, "track_running_stats": True}),
            ([3], {"affine": False}),
        ),
        (
            "in",
            (3, 4, 5, 5),
            OpParams(mode="train", running_stats=True),
            ([4], {"eps": EXPLICIT_EPS, "momentum": EXPLICIT_MOMENTUM, "affine": True, "track_running_stats": True}),
            ([4], {"track_running_stats": True}),
        ),
        (
            "in",
            (3, 4, 5, 5),
            OpParams(),
            ([4], {"eps": EXPLICIT_EPS, "momentum": EXPLICIT_MOMENTUM, "affine": True, "track_running_stats": False}),
            ([4], {}),
        ),
        (
            "rms",
            (2, 5, 33),
            OpParams(normalized_ndim=1),
            ([(33,)], {"eps": EXPLICIT_EPS, "elementwise_affine": True}),
            ([(33,)], {"elementwise_affine": False}),
        ),
    ],
)
def test_constructor_calls_leave_out_exactly_the_defaults(op, shape, params, explicit, defaults):
    assert constructor_call(_problem(op, shape, params), omit_defaults=False) == explicit
    assert constructor_call(_problem(op, shape, params, omit=True), omit_defaults=True) == defaults


def test_modules_are_constructed_with_only_the_arguments_that_differ_from_the_defaults():
    seen = Recorder()

    class InstanceNorm2d(tm.InstanceNorm2d):
        def __init__(self, *args, **kwargs):
            seen.calls.append((args, kwargs))
            super().__init__(*args, **kwargs)

    report = check("in", InstanceNorm2d, dtypes="float32", kinds="normal", shapes=[(3, 4, 5, 5)])
    assert bad_rows(report) == []
    kwarg_sets = {tuple(sorted(kw)) for _, kw in seen.calls}
    assert kwarg_sets == {
        ("affine", "eps", "momentum", "track_running_stats"),  # explicit: everything
        (),  # defaults, no running statistics
        ("track_running_stats",),  # defaults, running statistics
    }
    assert {args for args, _ in seen.calls} == {(4,)}


# -- how modules are found, set and read ---------------------------------------------------


class GroupNormScaleShift(tm.GroupNorm):
    """Correct, but its affine parameters are called scale and shift: normcheck cannot set them."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True):
        super().__init__(num_groups, num_channels, eps, affine=False)
        if affine:
            self.scale = nn.Parameter(torch.ones(num_channels))
            self.shift = nn.Parameter(torch.zeros(num_channels))


def test_module_without_a_weight_attribute_is_a_clear_error_row():
    report = check("gn", GroupNormScaleShift, dtypes="float32", kinds="normal", shapes=[(2, 6, 5, 5)])
    explicit = [r for r in report.records if not r["impl"].endswith(DEFAULTS)]
    assert {(r["check"], r["status"]) for r in explicit} == {(RUN, ERROR)}
    assert {r["message"] for r in explicit} == {
        "AttributeError: GroupNormScaleShift has no parameter 'weight' or 'gamma' for the case's weight of shape (6,)"
    }
    # the defaults style has no affine: nothing to set, and the module is correct
    assert {r["status"] for r in report.records if r["impl"].endswith(DEFAULTS)} == {PASS}


class GroupNormGammaBeta(tm.GroupNorm):
    """Correct, with its affine parameters called gamma and beta, kept in the (1, C, 1, ...) shape."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True):
        super().__init__(num_groups, num_channels, eps, affine=False)
        self.affine = affine
        if affine:
            self.gamma = nn.Parameter(torch.ones(1, num_channels, 1))
            self.beta = nn.Parameter(torch.zeros(1, num_channels, 1))

    def forward(self, x):
        y = super().forward(x).float()
        if self.affine:
            n, c = x.shape[:2]
            y = (y.reshape(n, c, -1) * self.gamma.float() + self.beta.float()).reshape(x.shape)
        return y.to(x.dtype)


def test_gamma_and_beta_in_another_shape_are_found_and_compared_per_channel():
    report = check("gn", GroupNormGammaBeta, dtypes="float32", kinds="normal", shapes=[(2, 6, 5, 5)])
    assert bad_rows(report) == []
    assert {r["check"] for r in report.records if r["status"] == PASS} >= {"grad_weight", "grad_bias"}


class BatchNorm2dReassigned(tm.BatchNorm2d):
    """Correct, but assigns new tensors to its buffers instead of updating them in place."""

    def update(self, running, batch):
        name = "running_mean" if running is self.running_mean else "running_var"
        with torch.no_grad():
            new = (1 - self.momentum) * running.float() + self.momentum * batch.detach().reshape(-1)
        setattr(self, name, new.to(running.dtype))


def test_running_statistics_are_read_from_the_buffers_after_each_call():
    report = check("bn", BatchNorm2dReassigned, dtypes="float32", kinds="normal", shapes=[(2, 3, 5, 5)])
    assert bad_rows(report) == []
    assert {r["check"] for r in report.records if r["status"] == PASS} >= {"running_mean", "running_var"}


class BatchNorm2dWithoutBuffers(tm.BatchNorm2d):
    """Keeps no running statistics at all."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats=False)


def test_module_without_running_statistics_is_a_clear_error_row():
    report = check("bn", BatchNorm2dWithoutBuffers, dtypes="float32", kinds="normal", shapes=[(2, 3, 5, 5)])
    assert {(r["check"], r["status"]) for r in report.records} == {(RUN, ERROR)}
    assert {r["message"] for r in report.records} == {
        "AttributeError: BatchNorm2dWithoutBuffers has no buffer 'running_mean' for the running statistics"
    }


# -- the rank a class name promises ------------------------------------------------------


def test_rank_problem_follows_the_class_name():
    assert rank_problem("BatchNorm2d", 4) is None
    assert rank_problem("BatchNorm2d", 3) == "BatchNorm2d takes 4-D input (its name ends in 2d), not 3-D"
    assert rank_problem("MyBatchNorm1d", 2) is None and rank_problem("MyBatchNorm1d", 3) is None
    assert rank_problem("MyBatchNorm1d", 4) == "MyBatchNorm1d takes 2-D or 3-D input (its name ends in 1d), not 4-D"
    assert rank_problem("InstanceNorm3D", 5) is None and rank_problem("InstanceNorm3D", 4) is not None
    assert rank_problem("BatchNorm", 5) is None and rank_problem("GroupNorm", 2) is None


BN_SHAPES = [(8, 5), (4, 6, 7), (2, 3, 5, 5), (2, 3, 2, 3, 4)]


def _ranks_by_status(report) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for r in report.records:
        out.setdefault(r["status"], set()).add(len(r["shape"].split("x")))
    return out


def test_a_2d_class_runs_4d_inputs_only_and_skips_the_rest_with_the_reason():
    report = check("bn", module("BatchNorm2d"), dtypes="float32", kinds="normal", shapes=BN_SHAPES)
    assert _ranks_by_status(report) == {PASS: {4}, SKIP: {2, 3, 5}}
    skips = [r for r in report.records if r["status"] == SKIP]
    assert all(r["check"] == RUN and r["message"].startswith("BatchNorm2d takes 4-D input") for r in skips)


class BatchNorm1d(tm.BatchNorm2d):
    """The correct batch norm under a 1d name."""


class BatchNorm(tm.BatchNorm2d):
    """The correct batch norm under a name that promises no rank."""


def test_a_1d_class_runs_2d_and_3d_inputs_and_a_plain_name_runs_every_rank():
    report = check("bn", BatchNorm1d, dtypes="float32", kinds="normal", shapes=BN_SHAPES)
    assert _ranks_by_status(report) == {PASS: {2, 3}, SKIP: {4, 5}}
    report = check("bn", BatchNorm, dtypes="float32", kinds="normal", shapes=BN_SHAPES)
    assert _ranks_by_status(report) == {PASS: {2, 3, 4, 5}}
