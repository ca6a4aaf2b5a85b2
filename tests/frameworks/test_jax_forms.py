"""The JAX user forms: pure functions with a torch.nn.functional signature (channels first) and
flax.linen modules with the fields of the Flax layer (channels last), checked end to end through
normcheck.api in both call styles."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import pytest
from _forms import (
    ALL_DTYPES,
    CORRECT_FUNCTIONS,
    FIXTURES,
    assert_diagnosed,
    bad_rows,
    by_style,
    expected_checks,
    passed_checks,
    spec,
)
from _require import require

jax = require("jax")
require("jax", "flax")

import flax.linen as nn
import jax.numpy as jnp

from fixtures import flax_modules as fm
from fixtures import jax_functions as jf
from normcheck.api import check
from normcheck.frameworks import CONVENTIONS
from normcheck.frameworks.jax import forms as form
from normcheck.ops import OpParams
from normcheck.user import EXPLICIT_EPS, EXPLICIT_MOMENTUM, FORMS
from normcheck.verify.inputs import KINDS, make_problem
from normcheck.verify.records import ERROR, FAIL, PASS, RUN, SKIP

FUNCTIONS = FIXTURES / "jax_functions.py"
MODULES = FIXTURES / "flax_modules.py"
FLAX_CLASSES = {"gn": nn.GroupNorm, "ln": nn.LayerNorm, "bn": nn.BatchNorm, "in": nn.InstanceNorm, "rms": nn.RMSNorm}

CORRECT_MODULES = {"gn": "GroupNorm", "ln": "LayerNorm", "bn": "BatchNorm", "in": "InstanceNorm", "rms": "RMSNorm"}
# One shape and variant per op (JAX compiles per shape, dtype and variant): multi-axis layer and
# RMS norm, batch norm in training and evaluation, instance norm with and without running statistics.
GN, LN, BN, IN, RMS = (2, 6, 5, 5), (2, 3, 7, 9), (2, 3, 5, 5), (3, 4, 5, 5), (2, 5, 33)
SUBSET = {
    "gn": {"shapes": [GN], "groups": [3]},
    "ln": {"shapes": [LN], "normalized_ndim": [2]},
    "bn": {"shapes": [BN]},
    "in": {"shapes": [IN]},
    "rms": {"shapes": [(2, 3, 8, 8)], "normalized_ndim": [2]},
}

# fixture: (op, expected hypothesis, dtype, input kind, options choosing a case where the bug shows clearly)
BUGGY_FUNCTIONS = {
    "group_norm_unbiased_variance": ("gn", "unbiased_variance", "float32", "normal", SUBSET["gn"]),
    "group_norm_grad_cut_mean": ("gn", "grad_cut_mean", "float32", "normal", SUBSET["gn"]),
    "group_norm_batch_axes": ("gn", "axes_batch_included", "float32", "normal", SUBSET["gn"]),
    "layer_norm_eps_outside_sqrt": ("ln", "eps_outside_sqrt", "float32", "tiny_scale", SUBSET["ln"]),
    "layer_norm_grad_cut_variance": ("ln", "grad_cut_variance", "float32", "normal", SUBSET["ln"]),
    "rms_norm_mean_subtracted": (
        "rms",
        "mean_subtracted",
        "float32",
        "normal",
        {"shapes": [RMS], "normalized_ndim": [1]},
    ),
    "batch_norm_biased_running_var": ("bn", "running_var_biased", "float32", "normal", SUBSET["bn"]),
}
BUGGY_MODULES = {
    "LayerNormOnePass": ("ln", "one_pass_variance", "float32", "large_mean", SUBSET["ln"]),
    "LayerNormMeanNotSubtracted": ("ln", "mean_not_subtracted", "float32", "normal", SUBSET["ln"]),
    "LayerNormBatchAxes": ("ln", "axes_batch_included", "float32", "normal", SUBSET["ln"]),
    "GroupNormTorchEps": ("gn", "eps_value", "float32", "tiny_scale", SUBSET["gn"]),
    "BatchNormMomentumInverted": ("bn", "momentum_inverted", "float32", "normal", SUBSET["bn"]),
    "BatchNormUnbiasedRunningVar": ("bn", "running_var_unbiased", "float32", "normal", SUBSET["bn"]),
}


def function(name: str) -> str:
    return spec(FUNCTIONS, name)


def module(name: str) -> str:
    return spec(MODULES, name)


# -- conventions --------------------------------------------------------------------------


def test_a_function_follows_torch_conventions_and_a_module_flax_conventions():
    # a jax_function has F's signature, so F's defaults (eps, momentum) and running-variance rule
    assert FORMS["jax_function"].conventions_of == "torch"
    assert FORMS["flax_module"].conventions_of == "jax"


@pytest.mark.parametrize("op", FLAX_CLASSES)
def test_the_fields_set_have_the_installed_flax_defaults(op):
    defaults = {f.name: f.default for f in dataclasses.fields(FLAX_CLASSES[op])}
    assert form.FLAX_FIELDS[op] == {name: defaults[name] for name in form.FLAX_FIELDS[op]}
    # the correct fixture declares the same fields with the same defaults
    mine = {f.name: f.default for f in dataclasses.fields(getattr(fm, CORRECT_MODULES[op]))}
    assert {k: mine[k] for k in form.FLAX_FIELDS[op]} == form.FLAX_FIELDS[op]


# -- correct code passes ----------------------------------------------------------------


@pytest.mark.slow
def test_correct_function_passes_the_full_default_grid():
    report = check("rms", function("rms_norm"), framework="jax", dtypes=ALL_DTYPES)
    assert bad_rows(report) == []
    assert by_style(report)[False] and by_style(report)[True]
    assert {r["dtype"] for r in report.records} == set(ALL_DTYPES)
    assert {r["input"] for r in report.records} == set(KINDS)
    assert len({r["shape"] for r in report.records}) == 6


@pytest.mark.parametrize("op", CORRECT_FUNCTIONS)
def test_correct_function_passes(op):
    report = check(op, function(CORRECT_FUNCTIONS[op]), framework="jax", dtypes=("float64", "float16"), **SUBSET[op])
    assert bad_rows(report) == []
    assert by_style(report)[False] and by_style(report)[True]
    assert passed_checks(report) == expected_checks(op)
    assert {r["layout"] for r in report.records} == {"contiguous"}


@pytest.mark.parametrize("op", CORRECT_MODULES)
def test_correct_module_passes(op):
    report = check(op, module(CORRECT_MODULES[op]), dtypes=("float32", "bfloat16"), **SUBSET[op])
    assert bad_rows(report) == []
    assert by_style(report)[False] and by_style(report)[True]
    assert passed_checks(report) == expected_checks(op) - ({"running_mean", "running_var"} if op == "in" else set())
    assert {r["layout"] for r in report.records} == {"contiguous" if op in ("ln", "rms") else "channels_last"}


def test_flax_instance_norm_has_no_running_statistics():
    report = check("in", module("InstanceNorm"), dtypes="float32", kinds="normal", shapes=[IN])
    tracked = [r for r in report.records if "train" in r["params"] or "eval" in r["params"]]
    assert tracked and {(r["check"], r["status"]) for r in tracked} == {(RUN, SKIP)}
    assert all("no running statistics" in r["message"] for r in tracked)


# -- buggy code fails, with the diagnosis of its bug ---------------------------------------


@pytest.mark.parametrize("name", BUGGY_FUNCTIONS)
def test_buggy_function_fails_with_its_diagnosis(name):
    op, hypothesis, dtype, kind, options = BUGGY_FUNCTIONS[name]
    assert_diagnosed(check(op, function(name), framework="jax", dtypes=dtype, kinds=kind, **options), hypothesis)


@pytest.mark.parametrize("name", BUGGY_MODULES)
def test_buggy_module_fails_with_its_diagnosis(name):
    op, hypothesis, dtype, kind, options = BUGGY_MODULES[name]
    assert_diagnosed(check(op, module(name), dtypes=dtype, kinds=kind, **options), hypothesis)


def test_a_wrong_default_epsilon_fails_in_the_defaults_style_only():
    report = check("gn", module("GroupNormTorchEps"), dtypes="float32", kinds="tiny_scale", **SUBSET["gn"])
    statuses = {style: {r["status"] for r in rows} for style, rows in by_style(report).items()}
    assert statuses == {False: {PASS}, True: {FAIL}}


# -- the call styles ---------------------------------------------------------------------


def _recording(fn, calls: list):
    def recorded(*args, **kwargs):
        calls.append(
            (
                len(args),
                tuple(
                    sorted((k, v if isinstance(v, float | bool) or v is None else "array") for k, v in kwargs.items())
                ),
            )
        )
        return fn(*args, **kwargs)

    return recorded


def test_batch_norm_calls_leave_out_exactly_the_defaults():
    calls: list = []
    report = check(
        "bn", _recording(jf.batch_norm, calls), framework="jax", dtypes="float32", kinds="normal", shapes=[BN]
    )
    assert bad_rows(report) == []
    given = (("eps", EXPLICIT_EPS), ("momentum", EXPLICIT_MOMENTUM))  # PyTorch's meaning: no translation
    affine = (("bias", "array"), ("weight", "array"))
    assert set(calls) == {
        (3, tuple(sorted((*affine, *given, ("training", True))))),  # explicit: x, running statistics; every option
        (3, tuple(sorted((*affine, *given, ("training", False))))),
        (3, (("training", True),)),  # defaults, training: no weight or bias
        (3, ()),  # defaults, evaluation: training=False is the default
    }


def test_instance_norm_calls_leave_out_exactly_the_defaults():
    calls: list = []
    report = check(
        "in", _recording(jf.instance_norm, calls), framework="jax", dtypes="float32", kinds="normal", shapes=[IN]
    )
    assert bad_rows(report) == []
    given = (("eps", EXPLICIT_EPS), ("momentum", EXPLICIT_MOMENTUM))
    affine = (("bias", "array"), ("weight", "array"))
    stats = (("running_mean", "array"), ("running_var", "array"))
    none = (("running_mean", None), ("running_var", None))
    assert set(calls) == {
        (1, tuple(sorted((*affine, *given, *none, ("use_input_stats", True))))),  # explicit, no running stats
        (1, tuple(sorted((*affine, *given, *stats, ("use_input_stats", True))))),
        (1, tuple(sorted((*affine, *given, *stats, ("use_input_stats", False))))),
        (1, ()),  # defaults, no running statistics
        (1, stats),  # defaults, training: use_input_stats=True is the default
        (1, (*stats, ("use_input_stats", False))),
    }


def test_explicit_calls_pass_none_for_a_missing_weight():
    calls: list = []
    report = check(
        "rms",
        _recording(jf.rms_norm, calls),
        framework="jax",
        dtypes="float32",
        kinds="normal",
        shapes=[(2, 6, 32)],
        normalized_ndim=[1],
    )
    assert bad_rows(report) == []
    assert set(calls) == {(2, (("eps", EXPLICIT_EPS), ("weight", "array"))), (2, ())}


def _problem(op, shape, params, omit=False, kind="normal"):
    """A case in the explicit style, or (``omit``) in the defaults style: no affine, Flax's eps and momentum."""
    conv = CONVENTIONS["jax"][op]
    if not omit:
        return make_problem(op, shape, params, "float32", kind, eps=EXPLICIT_EPS, momentum=EXPLICIT_MOMENTUM)
    return make_problem(
        op,
        shape,
        replace(params, affine=False),
        "float32",
        kind,
        eps=conv.default_eps("float32"),
        momentum=conv.default_new_weight,
    )


def _fields(cls, op, shape, params, omit):
    impl = form.build("flax_module", op, cls, cls.__name__, omit)
    return impl.fields(_problem(op, shape, params, omit))


EXPLICIT_MOMENTUM_FLAX = 1 - EXPLICIT_MOMENTUM  # Flax's meaning: the weight of the old value


@pytest.mark.parametrize(
    ("op", "shape", "params", "explicit", "defaults"),
    [
        (
            "gn",
            GN,
            OpParams(groups=3),
            {"num_groups": 3, "epsilon": EXPLICIT_EPS, "use_bias": True, "use_scale": True},
            {"num_groups": 3, "use_bias": False, "use_scale": False},
        ),
        (
            "gn",
            (4, 64, 8, 8),
            OpParams(groups=32),
            {"num_groups": 32, "epsilon": EXPLICIT_EPS, "use_bias": True, "use_scale": True},
            {"use_bias": False, "use_scale": False},
        ),  # 32 groups is the default
        (
            "ln",
            LN,
            OpParams(normalized_ndim=2),
            {
                "epsilon": EXPLICIT_EPS,
                "use_bias": True,
                "use_scale": True,
                "reduction_axes": (-2, -1),
                "feature_axes": (-2, -1),
            },
            {"use_bias": False, "use_scale": False, "reduction_axes": (-2, -1), "feature_axes": (-2, -1)},
        ),
        (
            "ln",
            RMS,
            OpParams(normalized_ndim=1),
            {"epsilon": EXPLICIT_EPS, "use_bias": True, "use_scale": True, "reduction_axes": -1, "feature_axes": -1},
            {"use_bias": False, "use_scale": False},
        ),
        (
            "bn",
            BN,
            OpParams(mode="eval", running_stats=True),
            {
                "momentum": EXPLICIT_MOMENTUM_FLAX,
                "epsilon": EXPLICIT_EPS,
                "use_bias": True,
                "use_scale": True,
                "axis": -1,
            },
            {"use_bias": False, "use_scale": False},
        ),
        (
            "in",
            IN,
            OpParams(),
            {"epsilon": EXPLICIT_EPS, "use_bias": True, "use_scale": True},
            {"use_bias": False, "use_scale": False},
        ),
        (
            "rms",
            RMS,
            OpParams(normalized_ndim=1),
            {"epsilon": EXPLICIT_EPS, "use_scale": True, "reduction_axes": -1, "feature_axes": -1},
            {"use_scale": False},
        ),
    ],
)
def test_module_fields_leave_out_exactly_the_defaults(op, shape, params, explicit, defaults):
    cls = FLAX_CLASSES[op]
    assert _fields(cls, op, shape, params, omit=False) == pytest.approx(explicit)
    assert _fields(cls, op, shape, params, omit=True) == defaults


class LayerNormNoFeatureAxes(nn.Module):
    """Takes reduction_axes only (its scale has the reduced axes' shape); num_groups-like required field."""

    epsilon: float = 1e-6
    use_bias: bool = True
    use_scale: bool = True
    reduction_axes: int | tuple[int, ...] = -1


class GroupNormGroupsRequired(nn.Module):
    num_groups: int
    epsilon: float = 1e-6
    use_bias: bool = True
    use_scale: bool = True


def test_feature_axes_only_for_a_class_that_declares_it_and_required_fields_always():
    assert "feature_axes" not in _fields(LayerNormNoFeatureAxes, "ln", LN, OpParams(normalized_ndim=2), omit=False)
    defaults = _fields(GroupNormGroupsRequired, "gn", (4, 64, 8, 8), OpParams(groups=32), omit=True)
    assert defaults == {"num_groups": 32, "use_bias": False, "use_scale": False}


# -- jit, and code that cannot be jitted ---------------------------------------------------


def test_a_function_that_cannot_be_jitted_runs_eagerly():
    with pytest.raises(jax.errors.ConcretizationTypeError):
        jax.jit(jf.layer_norm_checked, static_argnums=1)(jnp.ones((2, 3)), (3,))
    report = check(
        "ln",
        function("layer_norm_checked"),
        framework="jax",
        dtypes="float32",
        kinds="normal",
        shapes=[RMS],
        normalized_ndim=[1],
    )
    assert bad_rows(report) == []
    assert passed_checks(report) == {"forward", "grad_input", "grad_weight", "grad_bias"}


@pytest.mark.parametrize(
    ("form_id", "obj", "cache"),
    [
        ("jax_function", jf.group_norm, form._function_case),
        ("flax_module", fm.GroupNorm, form._module_case),
    ],
)
def test_compiled_once_per_configuration(form_id, obj, cache):
    impl = form.build(form_id, "gn", obj, "gn", False)
    layout = impl.layouts((3, 8, 2))[0]
    before = cache.cache_info()
    for kind in ("normal", "large_mean"):
        impl.run(_problem("gn", (3, 8, 2), OpParams(groups=4), kind=kind), layout, "cpu")
    after = cache.cache_info()
    assert (after.misses, after.hits) == (before.misses + 1, before.hits + 1)


def test_jit_or_eager_falls_back_once_and_stays_eager():
    traced = []

    def run(x):
        traced.append(isinstance(x, jax.core.Tracer))
        return x + 1 if x.sum() > 0 else x - 1

    fn = form.JitOrEager(run)
    assert float(fn(jnp.ones(2))[0]) == 2.0 and fn.eager
    assert float(fn(-jnp.ones(2))[0]) == -2.0
    assert traced == [True, False, False]


# -- what the user's code must look like: clear error rows -----------------------------------


class GroupNormGammaBeta(nn.Module):
    """Correct, but its parameters are called gamma and beta, which normcheck cannot set."""

    num_groups: int = 32
    epsilon: float = 1e-6
    use_bias: bool = True
    use_scale: bool = True

    @nn.compact
    def __call__(self, x):
        y = fm.GroupNorm(self.num_groups, self.epsilon, use_bias=False, use_scale=False)(x)
        c = x.shape[-1]
        if self.use_scale:
            y = y * self.param("gamma", nn.initializers.ones, (c,))
        if self.use_bias:
            y = y + self.param("beta", nn.initializers.zeros, (c,))
        return y


def test_module_whose_parameter_is_not_named_scale_is_a_clear_error_row():
    report = check("gn", GroupNormGammaBeta, dtypes="float32", kinds="normal", **SUBSET["gn"])
    explicit, defaults = by_style(report)[False], by_style(report)[True]
    assert {(r["check"], r["status"]) for r in explicit} == {(RUN, ERROR)}
    assert {r["message"] for r in explicit} == {
        "TypeError: GroupNormGammaBeta has no parameter 'scale' in its 'params' collection (it has 'beta', "
        "'gamma'); name them 'scale' and 'bias' as flax.linen.GroupNorm does"
    }
    # the defaults style has no affine: nothing to set, and the module is correct
    assert {r["status"] for r in defaults} == {PASS}


class LayerNormAlwaysScaled(nn.Module):
    """Creates its scale whatever use_scale says."""

    epsilon: float = 1e-6
    use_bias: bool = True
    use_scale: bool = True
    reduction_axes: int = -1
    feature_axes: int = -1

    @nn.compact
    def __call__(self, x):
        y = fm.LayerNorm(self.epsilon, use_bias=False, use_scale=False)(x)
        y = y * self.param("scale", nn.initializers.ones, (x.shape[-1],))
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (x.shape[-1],))
        return y


def test_module_that_ignores_use_scale_is_a_clear_error_row():
    report = check("ln", LayerNormAlwaysScaled, dtypes="float32", kinds="normal", shapes=[RMS], normalized_ndim=[1])
    assert {r["status"] for r in by_style(report)[False]} == {PASS}
    assert {r["message"] for r in by_style(report)[True]} == {
        "TypeError: LayerNormAlwaysScaled(use_bias=False, use_scale=False) creates parameter(s) 'scale' "
        "that normcheck cannot set; it must create exactly none"
    }


def batch_norm_returns_y_only(
    x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5
):
    return jf.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)[0]


def test_function_that_does_not_return_its_running_statistics_is_a_clear_error_row():
    report = check("bn", batch_norm_returns_y_only, framework="jax", dtypes="float32", kinds="normal", shapes=[BN])
    assert {(r["check"], r["status"]) for r in report.records} == {(RUN, ERROR)}
    assert {r["message"] for r in report.records} == {
        "TypeError: batch_norm_returns_y_only was given running statistics, so it must return (y, new_running_mean, "
        "new_running_var) as JAX arrays cannot be updated in place; it returned one array"
    }
