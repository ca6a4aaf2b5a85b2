"""The keras_layer form: keras.layers.Layer subclasses with the constructors of the Keras 3 layers,
checked end to end through the Python API on the layers in fixtures/keras_layers.py."""

from __future__ import annotations

import inspect
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import pytest
from _require import require

tf = require("tensorflow")

import keras
from keras import ops

from fixtures import keras_layers as layers
from normcheck.api import check
from normcheck.frameworks.tensorflow.facts import TENSORFLOW
from normcheck.frameworks.tensorflow.norm_forms import DEFAULTS, KerasLayerImplementation, constructor_args
from normcheck.ops import OpParams
from normcheck.user import EXPLICIT_EPS, EXPLICIT_MOMENTUM

FILE = Path(__file__).resolve().parents[2] / "fixtures" / "keras_layers.py"
KERAS_CLASSES = {
    "bn": keras.layers.BatchNormalization,
    "ln": keras.layers.LayerNormalization,
    "in": keras.layers.GroupNormalization,
    "gn": keras.layers.GroupNormalization,
    "rms": keras.layers.RMSNormalization,
}
CORRECT = {"bn": "BatchNorm", "ln": "LayerNorm", "in": "InstanceNorm", "gn": "GroupNorm", "rms": "RMSNorm"}
F32 = {"dtypes": "float32", "kinds": "normal"}


def spec(name: str) -> str:
    return f"{FILE}:{name}"


def rows(report, status: str | None = None, check_name: str | None = None) -> list[dict]:
    return [
        r
        for r in report.records
        if (status is None or r["status"] == status) and (check_name is None or r["check"] == check_name)
    ]


def bad(report) -> list[dict]:
    return rows(report, "fail") + rows(report, "error")


# -- the constructors' defaults, against the installed Keras ----------------------------------


def _defaults(cls) -> dict:
    return {
        k: p.default
        for k, p in inspect.signature(cls.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


@pytest.mark.parametrize("op", list(KERAS_CLASSES))
def test_defaults_are_the_keras_constructors(op):
    keras_defaults = _defaults(KERAS_CLASSES[op])
    assert {a: keras_defaults[a] for a in DEFAULTS[op]} == DEFAULTS[op]
    assert DEFAULTS[op]["epsilon"] == TENSORFLOW[op].eps
    # the correct fixtures take the same constructor
    fixture = _defaults(getattr(layers, CORRECT[op]))
    assert {a: fixture[a] for a in DEFAULTS[op]} == DEFAULTS[op]


def test_the_eps_bug_is_only_in_the_default():
    assert _defaults(layers.LayerNormEps1e5) == {**_defaults(layers.LayerNorm), "epsilon": 1e-5}


# -- the arguments each call style passes ----------------------------------------------------


def test_explicit_call_passes_every_argument():
    gn = constructor_args("gn", 4, OpParams(groups=2), 1e-4, None, omit_defaults=False)
    assert gn == {"groups": 2, "axis": -1, "epsilon": 1e-4, "center": True, "scale": True}
    assert constructor_args("in", 4, OpParams(affine=False), 1e-4, None, False) == {
        "groups": -1,
        "axis": -1,
        "epsilon": 1e-4,
        "center": False,
        "scale": False,
    }
    assert constructor_args("bn", 4, OpParams(running_stats=True), 1e-4, 0.75, False) == {
        "axis": -1,
        "momentum": 0.75,
        "epsilon": 1e-4,
        "center": True,
        "scale": True,
    }
    # layer and RMS norm: the trailing normalized axes, -1 alone when there is one
    assert constructor_args("ln", 4, OpParams(normalized_ndim=2), 1e-4, None, False)["axis"] == [2, 3]
    assert constructor_args("ln", 4, OpParams(normalized_ndim=1), 1e-4, None, False)["axis"] == -1
    assert constructor_args("rms", 5, OpParams(normalized_ndim=3), 1e-4, None, False) == {
        "axis": [2, 3, 4],
        "epsilon": 1e-4,
    }


def test_omit_defaults_passes_only_what_differs_from_keras():
    def omit(op, params, ndim=4):  # the case as the defaults call style has it: no affine
        return constructor_args(op, ndim, replace(params, affine=False), 123.0, 0.5, omit_defaults=True)

    assert omit("gn", OpParams(groups=2)) == {"groups": 2, "center": False, "scale": False}
    assert omit("gn", OpParams(groups=32)) == {"center": False, "scale": False}  # Keras's default groups
    assert omit("in", OpParams()) == {"groups": -1, "center": False, "scale": False}
    assert omit("bn", OpParams(running_stats=True)) == {"center": False, "scale": False}
    assert omit("ln", OpParams(normalized_ndim=1)) == {"center": False, "scale": False}
    assert omit("ln", OpParams(normalized_ndim=3)) == {"axis": [1, 2, 3], "center": False, "scale": False}
    assert omit("rms", OpParams(normalized_ndim=1)) == {}
    assert omit("rms", OpParams(normalized_ndim=2)) == {"axis": [2, 3]}


class RecordingBatchNorm(layers.BatchNorm):
    calls: ClassVar[list[dict]] = []

    def __init__(self, **kwargs):
        RecordingBatchNorm.calls.append(kwargs)
        super().__init__(**kwargs)


class RecordingGroupNorm(layers.GroupNorm):
    calls: ClassVar[list[dict]] = []
    built: ClassVar[list[tuple]] = []

    def __init__(self, **kwargs):
        RecordingGroupNorm.calls.append(kwargs)
        super().__init__(**kwargs)

    def build(self, input_shape):
        RecordingGroupNorm.built.append(tuple(input_shape))
        super().build(input_shape)


def _distinct(calls: list[dict]) -> list[dict]:
    return [dict(c) for c in dict.fromkeys(tuple(sorted(c.items())) for c in calls)]


def test_both_call_styles_reach_the_constructor():
    RecordingBatchNorm.calls.clear()
    report = check("bn", RecordingBatchNorm, shapes=[(4, 3, 5)], **F32)
    assert not bad(report)
    momentum = TENSORFLOW["bn"].to_framework_momentum(EXPLICIT_MOMENTUM)  # 0.75: the weight of the old value
    assert _distinct(RecordingBatchNorm.calls) == [
        {"axis": -1, "momentum": momentum, "epsilon": EXPLICIT_EPS, "center": True, "scale": True, "dtype": "float32"},
        {"center": False, "scale": False, "dtype": "float32"},
    ]


def test_group_norm_is_built_channels_last_and_keras_default_groups_is_left_out():
    RecordingGroupNorm.calls.clear()
    RecordingGroupNorm.built.clear()
    report = check("gn", RecordingGroupNorm, shapes=[(2, 64, 3, 5)], groups=[2, 32], dtypes="float16", kinds="normal")
    assert not bad(report)
    assert {r["layout"] for r in report.records} == {"channels_last"}
    assert set(RecordingGroupNorm.built) == {(2, 3, 5, 64)}
    calls = _distinct(RecordingGroupNorm.calls)
    assert {"groups": 2, "center": False, "scale": False, "dtype": "float16"} in calls
    assert {"center": False, "scale": False, "dtype": "float16"} in calls  # G = 32: Keras's default
    assert {
        "groups": 32,
        "axis": -1,
        "epsilon": EXPLICIT_EPS,
        "center": True,
        "scale": True,
        "dtype": "float16",
    } in calls
    assert len(calls) == 4


def test_layouts():
    for op in ("bn", "in", "gn"):
        impl = KerasLayerImplementation(op, "x", None, running_stats=op == "bn")
        assert impl.layouts((5, 4)) == ("contiguous",)
        assert impl.layouts((2, 3, 4, 5)) == impl.layouts((2, 3, 10)) == ("channels_last",)
    for op in ("ln", "rms"):
        assert KerasLayerImplementation(op, "x", None, False).layouts((2, 3, 4, 5)) == ("contiguous",)


# -- correct layers pass ---------------------------------------------------------------------


@pytest.mark.parametrize("op", list(CORRECT))
def test_correct_layer_passes_default_shapes(op):
    report = check(op, spec(CORRECT[op]), **F32)
    assert not bad(report), bad(report)[:3]
    checks = {r["check"] for r in rows(report, "pass") if r["impl"] == CORRECT[op]}
    want = {"forward", "grad_input", "grad_weight"} | (set() if op == "rms" else {"grad_bias"})
    assert checks == want | ({"running_mean", "running_var"} if op == "bn" else set())
    assert {r["impl"] for r in rows(report, "pass")} == {CORRECT[op], f"{CORRECT[op]} (defaults)"}
    if op == "in":  # GroupNormalization(groups=-1) keeps no running statistics
        skipped = rows(report, "skip")
        assert skipped and all("keeps no running statistics" in r["message"] for r in skipped)


@pytest.mark.parametrize("op", list(CORRECT))
def test_correct_layer_passes_in_half_precision_and_hostile_kinds(op):
    shape = {"bn": (3, 4, 5), "ln": (2, 3, 8), "in": (2, 3, 10), "gn": (2, 6, 5), "rms": (2, 3, 8)}[op]
    report = check(
        op, spec(CORRECT[op]), shapes=[shape], dtypes="bfloat16,float16", kinds="large_mean,tiny_scale,half_range"
    )
    assert not bad(report), bad(report)[:3]
    assert rows(report, "pass")


@pytest.mark.slow
def test_group_norm_passes_the_full_default_grid():
    report = check("gn", spec("GroupNorm"))  # every default shape, dtype and input kind
    statuses = Counter(r["status"] for r in report.records)
    assert statuses["fail"] == statuses["error"] == 0, bad(report)[:3]
    assert all(r["message"] for r in rows(report, "skip")), "every skip says why"
    passed = rows(report, "pass")
    assert {r["dtype"] for r in passed} == {"float64", "float32", "float16", "bfloat16"}
    assert {r["input"] for r in passed} == {"normal", "large_mean", "constant", "tiny_scale", "half_range"}
    assert {r["impl"] for r in passed} == {"GroupNorm", "GroupNorm (defaults)"}
    assert {r["layout"] for r in passed if r["shape"] != "5x4"} == {"channels_last"}


# -- buggy layers fail, diagnosed ------------------------------------------------------------

BUGGY = {
    "LayerNormEps1e5": "eps_value",
    "BatchNormMomentumInverted": "momentum_inverted",
    "BatchNormRunningVarUnbiased": "running_var_unbiased",
    "GroupNormInterleaved": "groups_interleaved",
    "GroupNormOnePass": "one_pass_variance",
    "InstanceNormUnbiasedVar": "unbiased_variance",
    "RMSNormMeanSubtracted": "mean_subtracted",
    "GemmaRMSNormDoubleOffset": "gemma_offset_doubled",
}
# where each bug shows clearly
EXPOSING = {
    "LayerNormEps1e5": ("ln", {"shapes": [(4, 16)], "dtypes": "float64", "kinds": "tiny_scale"}),
    "BatchNormMomentumInverted": ("bn", {"shapes": [(4, 3, 5)], "dtypes": "float64", "kinds": "normal"}),
    "BatchNormRunningVarUnbiased": ("bn", {"shapes": [(2, 3, 2)], "dtypes": "float64", "kinds": "normal"}),
    "GroupNormInterleaved": ("gn", {"shapes": [(2, 6, 5, 5)], "groups": [2], "dtypes": "float64", "kinds": "normal"}),
    "GroupNormOnePass": ("gn", {"shapes": [(2, 6, 5, 5)], "groups": [2], "dtypes": "float32", "kinds": "large_mean"}),
    "InstanceNormUnbiasedVar": ("in", {"shapes": [(2, 3, 6)], "dtypes": "float64", "kinds": "normal"}),
    "RMSNormMeanSubtracted": ("rms", {"shapes": [(4, 16)], "dtypes": "float64", "kinds": "normal"}),
    "GemmaRMSNormDoubleOffset": (
        "rms",
        {"shapes": [(4, 16)], "dtypes": "float64", "kinds": "normal", "variant": "gemma"},
    ),
}


# the right formula in half-precision arithmetic: a precision cause on its half rows, never a formula one
IN_INPUT_DTYPE = {"GroupNormInInputDtype": "gn"}
# correct under --variant gemma (tests/frameworks/test_keras_variants.py)
VARIANTS = {"GemmaRMSNorm": "rms"}


def test_every_buggy_fixture_is_in_the_table():
    names = {n for n, c in inspect.getmembers(layers, inspect.isclass) if c.__module__ == layers.__name__}
    assert names - set(CORRECT.values()) - set(IN_INPUT_DTYPE) - set(VARIANTS) - {"_Normalization"} == set(BUGGY)
    for name in BUGGY:
        assert getattr(layers, name).__doc__.startswith("Bug: ")
    for name in (*CORRECT.values(), *IN_INPUT_DTYPE, *VARIANTS):
        assert getattr(layers, name).__doc__.startswith("Correct: ")


@pytest.mark.parametrize("name", list(IN_INPUT_DTYPE))
def test_half_precision_arithmetic_is_never_given_a_formula_cause(name):
    op = IN_INPUT_DTYPE[name]
    report = check(op, spec(name), shapes=[(2, 6, 5, 5)], groups=[1, 3], kinds="normal,large_mean,half_range")
    assert not [r for r in rows(report, "fail") if r["dtype"] in ("float32", "float64")]
    half = [r for r in rows(report, "fail") if r["dtype"] in ("float16", "bfloat16")]
    assert half, "half arithmetic loses accuracy the float32 layer keeps"
    assert all((r["diagnosis"] or {}).get("family") != "formula" for r in half), [r["diagnosis"] for r in half][:2]


@pytest.mark.parametrize("name", list(BUGGY))
def test_buggy_layer_fails_with_its_diagnosis(name):
    op, options = EXPOSING[name]
    report = check(op, spec(name), **options)
    failing = rows(report, "fail")
    assert failing and not rows(report, "error")
    hypotheses = {(r["diagnosis"] or {}).get("hypothesis") for r in failing}
    assert BUGGY[name] in hypotheses, (hypotheses, failing[0]["message"])


def test_the_eps_port_fails_only_when_keras_default_is_due():
    op, options = EXPOSING["LayerNormEps1e5"]
    report = check(op, spec("LayerNormEps1e5"), **options)
    assert {r["impl"] for r in rows(report, "fail")} == {"LayerNormEps1e5 (defaults)"}
    assert {r["status"] for r in report.records if r["impl"] == "LayerNormEps1e5"} == {"pass"}


# -- weights found under other names, and clear errors ----------------------------------------


class TorchNamedLayerNorm(layers.LayerNorm):
    """Its scale and offset are called weight and bias, as in PyTorch."""

    def _add_affine(self, shape, center, scale):
        self.gamma = self.beta = None
        self.weight = self.add_weight(shape=shape, initializer="ones", name="weight") if scale else None
        self.bias = self.add_weight(shape=shape, initializer="zeros", name="bias") if center else None

    def _affine(self, y, view):
        if self.weight is not None:
            y = y * ops.reshape(ops.cast(self.weight, y.dtype), view)
        if self.bias is not None:
            y = y + ops.reshape(ops.cast(self.bias, y.dtype), view)
        return y


class NoGammaLayerNorm(layers.LayerNorm):
    """Keeps its scale and offset under names normcheck does not look for."""

    def _add_affine(self, shape, center, scale):
        self.gamma = self.beta = None
        self.g = self.add_weight(shape=shape, initializer="ones", name="g") if scale else None


class NoDtypeLayerNorm(layers.LayerNorm):
    """A constructor that does not pass dtype on to keras.layers.Layer."""

    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True):
        super().__init__(axis=axis, epsilon=epsilon, center=center, scale=scale)


def test_weight_and_bias_are_found_when_there_is_no_gamma():
    report = check("ln", TorchNamedLayerNorm, shapes=[(2, 3, 8)], **F32)
    assert not bad(report)
    assert {r["check"] for r in rows(report, "pass")} == {"forward", "grad_input", "grad_weight", "grad_bias"}


def test_a_layer_without_gamma_is_a_clear_error_row():
    report = check("ln", NoGammaLayerNorm, shapes=[(4, 16)], **F32)
    errors = rows(report, "error")
    assert errors and {r["impl"] for r in errors} == {"NoGammaLayerNorm"}
    assert {r["message"] for r in errors} == {
        "AttributeError: NoGammaLayerNorm has no variable 'gamma', 'weight' or 'scale' after build()"
    }
    # without affine parameters (the defaults call style) there is nothing to look for
    assert {r["status"] for r in report.records if r["impl"] == "NoGammaLayerNorm (defaults)"} == {"pass"}


def test_a_constructor_without_dtype_is_a_clear_error_row():
    report = check("ln", NoDtypeLayerNorm, shapes=[(4, 16)], **F32)
    errors = rows(report, "error")
    assert len(errors) == len(report.records) == 2
    message = errors[0]["message"]
    assert message.startswith(
        "TypeError: NoDtypeLayerNorm(axis=-1, epsilon=0.0001, center=True, scale=True, dtype='float32') failed"
    )
    assert "pass the others (dtype) on to keras.layers.Layer" in message
