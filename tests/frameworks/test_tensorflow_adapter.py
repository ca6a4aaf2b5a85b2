"""The TensorFlow adapter: Keras 3 layers and the raw tf.nn ops, checked end to end, and the
TensorFlow conventions checked against the installed Keras."""

from __future__ import annotations

import inspect
import os
import sys
import types

import pytest
from _require import require

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow's first import, as the adapter does
tf = require("tensorflow")

import keras
import numpy as np

from normcheck.conventions import BIASED, CHANNELS_LAST, OLD, TWO_PASS
from normcheck.frameworks import load
from normcheck.frameworks.base import Unsupported
from normcheck.frameworks.tensorflow import adapter
from normcheck.frameworks.tensorflow.adapter import (
    KERAS_NAMES,
    RAW_FLOAT32_NAME,
    RAW_NAME,
    RMS_SCALING_NAME,
    SYNCHRONIZED_NAME,
    Bound,
    TensorFlowImplementation,
    bind_keras,
    tensor,
)
from normcheck.frameworks.tensorflow.facts import TENSORFLOW
from normcheck.ops import OpParams
from normcheck.reference import reference
from normcheck.verify.local import check_case, run
from normcheck.verify.plan import Options, Unit, plan, problem_for
from normcheck.verify.records import ERROR, FAIL, KNOWN, PASS, RUN, SKIP, Case
from normcheck.verify.tolerance import witness_errors

OP_NAMES = ("bn", "ln", "in", "gn", "rms")
GRADS = ("grad_input", "grad_weight", "grad_bias")
RUNNING = ("running_mean", "running_var")
HALF = ("float16", "bfloat16")


@pytest.fixture(scope="module")
def fw():
    return load("tensorflow")


def bn(mode: str) -> OpParams:
    return OpParams(mode=mode, running_stats=True)


def impl_named(fw, op: str, name: str) -> TensorFlowImplementation:
    return next(i for i in fw.implementations(op) if i.name == name)


def problem(fw, op, shape, params, dtype="float32", kind="normal", momentum=None):
    opts = Options(ops=(op,), dtypes=(dtype,), momentum=momentum)
    return problem_for(Unit(op, shape, params, dtype, kind, fw), opts)


def checks(fw, impl, shape, params, dtype="float32", kind="normal", layout="contiguous", momentum=None):
    """One case of ``impl`` through the engine, as verify.run checks it: records by check name."""
    p = problem(fw, impl.op, shape, params, dtype, kind, momentum)
    expected = reference(p)
    case = Case(impl.op, "tensorflow", impl.name, shape, params, dtype, kind, layout)
    opts = Options(ops=(impl.op,), dtypes=(dtype,), kinds=(kind,), momentum=momentum)
    return {r.check: r for r in check_case(case, impl, p, expected, witness_errors(p, expected), opts)}


def statuses(records) -> dict[str, str]:
    return {c: r.status for c, r in records.items()}


# -- end to end ----------------------------------------------------------------------


def _bad(results, fw):
    """Rows that are neither pass nor skip, except failures a known issue explains."""
    return [
        (r.case.impl, r.case.shape, r.case.params.label(), r.case.dtype, r.case.kind, r.case.layout, r.check, r.message)
        for r in results
        if r.status not in (PASS, SKIP) and not (r.status == KNOWN and fw.known_issue(r.case, r.check))
    ]


# Keras layers with a documented defect (facts.KNOWN_ISSUES): not RMS norm, a one-pass variance
DOCUMENTED = (RMS_SCALING_NAME, SYNCHRONIZED_NAME)


@pytest.mark.parametrize("op", OP_NAMES)
@pytest.mark.slow
def test_default_grid_passes_in_float32_and_float16(fw, op):
    opts = Options(ops=(op,), dtypes=("float32", "float16"), kinds=("normal", "large_mean", "constant"))
    units = plan(opts, [fw])
    results = list(run(units, opts))
    assert len({r.case for r in results}) == sum(len(u.runs) for u in units) > 0
    assert _bad(results, fw) == []
    # the Keras layers and the float32-compute raw ops pass every check they make; the two layers
    # with a documented defect fail only as it, confirmed by its hypothesis
    for r in results:
        if r.case.impl in DOCUMENTED:
            assert r.status in (PASS, SKIP) or (r.status == KNOWN and r.diagnosis is not None), (r.case, r.message)
        elif r.case.impl != RAW_NAME:
            assert r.status in (PASS, SKIP), (r.case, r.check, r.message)
    passed = {r.check for r in results if r.status == PASS and r.case.impl == KERAS_NAMES[op]}
    want = {"forward", "grad_input", "grad_weight"} | (set() if op == "rms" else {"grad_bias"})
    assert passed == want | (set(RUNNING) if op == "bn" else set())
    # every layout the implementations declare was run
    layouts = {r.case.layout for r in results}
    assert layouts == ({"contiguous"} if op in ("ln", "rms") else {"contiguous", "channels_last"})


@pytest.mark.parametrize("op", OP_NAMES)
@pytest.mark.slow
def test_bfloat16_and_float64_pass(fw, op):
    opts = Options(ops=(op,), dtypes=("bfloat16", "float64"), kinds=("normal", "tiny_scale", "half_range"))
    results = list(run(plan(opts, [fw]), opts))
    assert _bad(results, fw) == []
    checked = [r for r in results if r.case.impl not in (RAW_NAME, *DOCUMENTED) or r.case.dtype == "float64"]
    assert all(r.status in (PASS, SKIP) for r in checked if r.case.impl not in DOCUMENTED)
    assert all(r.status in (PASS, SKIP, KNOWN) for r in checked)


def test_raw_ops_in_half_precision_fail_as_the_known_issues_say(fw):
    opts = Options(ops=("gn",), dtypes=HALF, shapes=((2, 6, 5, 5),), groups=(2,), kinds=("large_mean", "half_range"))
    results = list(run(plan(opts, [fw]), opts))
    known = [r for r in results if r.status == KNOWN]
    assert known and all(r.case.impl == RAW_NAME and r.case.dtype in HALF for r in known)
    assert any("variance beyond float16's range" in r.message for r in known if r.case.kind == "half_range")
    # the same graph with half inputs cast to float32 first: the setting that avoids both
    assert {r.status for r in results if r.case.impl == RAW_FLOAT32_NAME} == {PASS}


# -- the causes behind the known issues, measured --------------------------------------------


def test_tf_nn_moments_rounds_float16_statistics_and_overflows():
    x = np.random.default_rng(0).uniform(-6e4, 6e4, (256,))
    mean, var = tf.nn.moments(tensor(x, "float16"), [0])
    assert mean.dtype == tf.float16 and var.dtype == tf.float16
    assert np.isinf(var.numpy())  # the variance is about 1.2e9
    _, var32 = tf.nn.moments(tensor(x, "float32"), [0])
    assert np.isfinite(var32.numpy())
    # bfloat16 is not upcast at all: its mean is computed in bfloat16
    assert tf.nn.moments(tensor(x, "bfloat16"), [0])[0].dtype == tf.bfloat16


def test_float16_sums_accumulate_in_float16():
    # 10000 times float16(0.1): the exact sum 999.76 rounds to 1000 in float16 (a spacing of 0.5);
    # TensorFlow's float16 reduce_sum lands 6 spacings away, bfloat16's is correctly rounded
    x = np.full(10000, float(np.float16(0.1)))
    exact = float(x.sum())
    assert abs(float(tf.reduce_sum(tensor(x, "float16"))) - exact) > 2.0
    assert float(tf.reduce_sum(tensor(x, "bfloat16"))) == 1000.0
    assert float(tf.reduce_sum(tensor(x, "float32"))) == exact


# -- layouts -------------------------------------------------------------------------------


def test_layouts(fw):
    for op in OP_NAMES:
        for impl in fw.implementations(op):
            assert impl.layouts((5, 4)) == ("contiguous",)
            want = ("contiguous", "channels_last") if op in ("bn", "in", "gn") else ("contiguous",)
            for shape in ((2, 3, 10), (2, 3, 4, 5), (2, 3, 2, 3, 4)):
                assert impl.layouts(shape) == want, (impl.name, shape)


def test_channels_last_reaches_keras_as_axis_minus_one(fw):
    p = problem(fw, "gn", (2, 6, 5, 3), OpParams(groups=2))
    seen = []

    def bind(p, layout, device):
        bound = bind_keras(p, layout, device)
        seen.append((bound.layer.axis, bound.layer.input_spec.axes))
        return bound

    impl = TensorFlowImplementation("gn", "probe", bind, running_stats=False)
    impl.run(p, "channels_last", "cpu")
    impl.run(p, "contiguous", "cpu")
    assert seen == [(-1, {-1: 6}), (1, {1: 6})]


def test_cached_layers_give_the_results_of_fresh_ones(fw):
    impl = impl_named(fw, "bn", KERAS_NAMES["bn"])
    first = problem(fw, "bn", (2, 3, 5, 5), bn("train"), kind="large_mean")
    second = problem(fw, "bn", (2, 3, 5, 5), bn("train"), kind="normal")
    impl.run(first, "channels_last", "cpu")  # leaves its weights and moving statistics behind
    reused = impl.run(second, "channels_last", "cpu")
    adapter._keras_layer.cache_clear()
    fresh = impl.run(second, "channels_last", "cpu")
    assert reused.values.keys() == fresh.values.keys()
    for c in fresh.values:
        np.testing.assert_array_equal(reused.values[c], fresh.values[c], err_msg=c)


# -- running statistics, missing checks and unsupported cases ------------------------------


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_keras_batch_norm_running_statistics_pass(fw, mode):
    impl = impl_named(fw, "bn", KERAS_NAMES["bn"])
    for layout in ("contiguous", "channels_last"):
        r = checks(fw, impl, (3, 7, 4, 6), bn(mode), layout=layout)
        assert set(statuses(r)) == {"forward", *GRADS, *RUNNING}
        assert set(statuses(r).values()) == {PASS}, (layout, {c: x.message for c, x in r.items()})
    # a momentum the caller gives is translated into Keras's meaning
    r = checks(fw, impl, (3, 7, 4, 6), bn(mode), momentum=0.3)
    assert set(statuses(r).values()) == {PASS}


def test_raw_batch_norm_reports_running_statistics_as_skipped(fw):
    for name in (RAW_NAME, RAW_FLOAT32_NAME):
        impl = impl_named(fw, "bn", name)
        r = checks(fw, impl, (2, 3, 5, 5), bn("train"))
        assert statuses(r) == {
            "forward": PASS,
            **dict.fromkeys(GRADS[1:], PASS),
            "grad_input": PASS,
            **dict.fromkeys(RUNNING, SKIP),
        }
        assert r["running_mean"].message == f"{name} keeps no running statistics"
        r = checks(fw, impl, (2, 3, 5, 5), bn("eval"))
        assert statuses(r) == {RUN: SKIP}
        assert "no inference mode" in r[RUN].message


def test_instance_norm_has_no_running_statistics(fw):
    for impl in fw.implementations("in"):
        r = checks(fw, impl, (3, 4, 5, 5), bn("train"))
        assert [r[c].status for c in RUNNING] == [SKIP, SKIP]
        assert {r[c].status for c in ("forward", *GRADS)} == {PASS}
        assert statuses(checks(fw, impl, (3, 4, 5, 5), bn("eval"))) == {RUN: SKIP}


def test_expected_checks_follow_the_params(fw):
    def keys(op, shape, params):
        return set(fw.implementations(op)[0].run(problem(fw, op, shape, params), "contiguous", "cpu").values)

    base = {"forward", "grad_input"}
    assert keys("rms", (2, 6, 32), OpParams(normalized_ndim=1, affine=False)) == base
    assert keys("rms", (2, 3, 8, 8), OpParams(normalized_ndim=2)) == base | {"grad_weight"}
    assert keys("in", (2, 4, 6, 6), OpParams(affine=False)) == base
    assert keys("ln", (2, 3, 4, 5), OpParams(normalized_ndim=3)) == base | set(GRADS[1:])
    assert keys("bn", (8, 5), bn("eval")) == base | set(GRADS[1:]) | set(RUNNING)


def test_unsupported_dtype_is_a_skip(fw):
    def bind(p, layout, device):
        return Bound(lambda x, train: tf.raw_ops.Erfinv(x=x))  # no bfloat16 CPU kernel

    impl = TensorFlowImplementation("ln", "erfinv", bind, running_stats=False)
    shape, params = (4, 16), OpParams(normalized_ndim=1)
    p = problem(fw, "ln", shape, params, "bfloat16")
    with pytest.raises(Unsupported, match="Could not find device for node"):
        impl.run(p, "contiguous", "cpu")
    expected = reference(p)
    case = Case("ln", "tensorflow", impl.name, shape, params, "bfloat16", "normal")
    for explicit, status in ((False, SKIP), (True, ERROR)):
        opts = Options(ops=("ln",), dtypes=("bfloat16",), explicit_dtypes=explicit)
        rows = list(check_case(case, impl, p, expected, witness_errors(p, expected), opts))
        assert [(r.check, r.status) for r in rows] == [(RUN, status)]
        assert rows[0].message.startswith("bfloat16 not supported: Could not find device for node")


def test_implementations_leave_the_problem_unchanged(fw):
    for op, shape, params in (("bn", (2, 3, 5, 5), bn("eval")), ("gn", (2, 6, 5, 5), OpParams(groups=3))):
        p = problem(fw, op, shape, params)
        before = [a.copy() for a in (p.x, p.dy, p.weight, p.bias, *p.steps)]
        for impl in fw.implementations(op):
            for layout in impl.layouts(shape):
                impl.run(p, layout, "cpu")
        for a, b in zip(before, (p.x, p.dy, p.weight, p.bias, *p.steps), strict=True):
            np.testing.assert_array_equal(a, b)
        if params.running_stats:
            assert (p.running_mean == 0).all() and (p.running_var == 1).all()


# -- a broken adapter is caught --------------------------------------------------------------


def test_untranslated_momentum_fails_the_running_statistics(fw):
    def bind(p, layout, device):
        # PyTorch's momentum handed to Keras as is: the weight of the new batch becomes the old one's
        layer = keras.layers.BatchNormalization(axis=1, momentum=p.momentum, epsilon=p.eps, dtype=p.dtype)
        layer.build(p.shape)
        layer.gamma.assign(tensor(p.weight, p.dtype))
        layer.beta.assign(tensor(p.bias, p.dtype))
        return Bound(
            lambda x, train: layer(x, training=train), layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance
        )

    impl = TensorFlowImplementation("bn", "wrong-momentum", bind, running_stats=True)
    r = checks(fw, impl, (2, 3, 5, 5), bn("train"))
    assert [r[c].status for c in RUNNING] == [FAIL, FAIL]
    assert [r[c].status for c in ("forward", *GRADS)] == [PASS] * 4
    assert checks(fw, impl, (2, 3, 5, 5), bn("eval"))["forward"].status == FAIL


# -- the conventions, against the installed Keras ------------------------------------------------


def _defaults(cls) -> dict:
    return {k: v.default for k, v in inspect.signature(cls.__init__).parameters.items()}


def test_declared_defaults_match_the_constructors():
    layers = keras.layers
    bnd, lnd = _defaults(layers.BatchNormalization), _defaults(layers.LayerNormalization)
    gnd, rmsd = _defaults(layers.GroupNormalization), _defaults(layers.RMSNormalization)
    assert TENSORFLOW["bn"].eps == bnd["epsilon"] and TENSORFLOW["bn"].momentum == bnd["momentum"]
    assert bnd["axis"] == -1 and bnd["center"] and bnd["scale"]
    assert TENSORFLOW["ln"].eps == lnd["epsilon"] and lnd["axis"] == -1 and lnd["center"] and lnd["scale"]
    assert TENSORFLOW["gn"].eps == TENSORFLOW["in"].eps == gnd["epsilon"]
    assert TENSORFLOW["gn"].groups == gnd["groups"] and gnd["axis"] == -1 and gnd["center"] and gnd["scale"]
    assert TENSORFLOW["rms"].eps == rmsd["epsilon"] and rmsd["axis"] == -1
    assert all(TENSORFLOW[op].layout == CHANNELS_LAST for op in OP_NAMES)
    assert all(TENSORFLOW[op].variance == TWO_PASS and TENSORFLOW[op].eps_floor == 0 for op in OP_NAMES)
    assert TENSORFLOW["bn"].momentum_weights == OLD and TENSORFLOW["bn"].running_var == BIASED
    assert all(TENSORFLOW[op].running_var is None for op in ("ln", "in", "gn", "rms"))


def _one_step(momentum: float, x: np.ndarray, eps: float = 1e-3, dtype: str = "float64"):
    layer = keras.layers.BatchNormalization(momentum=momentum, epsilon=eps, dtype=dtype)
    y = layer(tensor(x, dtype), training=True)
    return layer, tf.cast(y, tf.float64).numpy()


def test_momentum_weighs_the_old_value_and_the_running_variance_is_biased():
    x = np.random.default_rng(1).standard_normal((6, 3))
    layer, _ = _one_step(0.75, x)
    # moving = momentum * old + (1 - momentum) * batch, from 0 and 1
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.25 * x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.75 + 0.25 * x.var(0), rtol=1e-12)  # ddof=0
    assert not np.allclose(layer.moving_variance.numpy(), 0.75 + 0.25 * x.var(0, ddof=1))


def test_no_eps_floor_and_a_two_pass_variance():
    # a fused kernel would raise eps=1e-8 to 1.001e-5: with a variance of 1e-8 the output would halve
    x = 1e-4 * np.random.default_rng(2).standard_normal((64, 2))
    _, y = _one_step(0.99, x, eps=1e-8)
    np.testing.assert_allclose(y, (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-8), rtol=1e-9)
    # float32 data at 1e4 with a spread of 1e-2: E[x^2] - E[x]^2 (spacing 8 at 1e8) would lose the
    # variance of 1e-4 entirely; two passes keep it up to the mean's rounding (about 1%)
    x = 1e4 + 1e-2 * np.random.default_rng(3).standard_normal((256, 2))
    x = x.astype(np.float32).astype(np.float64)
    layer, _ = _one_step(0.0, x, dtype="float32")
    np.testing.assert_allclose(layer.moving_variance.numpy(), x.var(0), rtol=0.05)


def test_half_inputs_compute_in_float32_and_return_the_input_dtype():
    # a float16 sum of 4096 values of 60 overflows; the layers upcast before their moments
    x = np.full((2, 32, 32, 4), 60.0)
    x[:, 0, 0, :] = 0.0
    for dtype in HALF:
        for layer in (
            keras.layers.BatchNormalization(dtype=dtype),
            keras.layers.LayerNormalization(axis=[1, 2, 3], dtype=dtype),
            keras.layers.GroupNormalization(groups=2, dtype=dtype),
            keras.layers.RMSNormalization(axis=[2, 3], dtype=dtype),
        ):
            y = layer(tensor(x, dtype), training=True)
            assert y.dtype.name == dtype
            assert all(v.dtype == dtype for v in layer.weights)
            assert np.isfinite(tf.cast(y, tf.float64).numpy()).all(), (dtype, layer.name)


def test_rms_normalization_takes_a_list_of_trailing_axes_only():
    x = np.random.default_rng(4).standard_normal((2, 3, 4, 5))
    layer = keras.layers.RMSNormalization(axis=[2, 3], epsilon=1e-6, dtype="float64")
    y = layer(tensor(x, "float64")).numpy()
    assert tuple(layer.scale.shape) == (4, 5)
    np.testing.assert_allclose(y, x / np.sqrt((x**2).mean(axis=(2, 3), keepdims=True) + 1e-6), rtol=1e-12)
    # its scale is not broadcast back over axes that are not trailing (unlike LayerNormalization's)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Incompatible shapes"):
        keras.layers.RMSNormalization(axis=[1, 2], dtype="float64")(tensor(x, "float64"))
    keras.layers.LayerNormalization(axis=[1, 2], dtype="float64")(tensor(x, "float64"))


def test_keras_runs_on_the_tensorflow_backend():
    assert keras.backend.backend() == "tensorflow"


def test_another_keras_backend_is_refused(monkeypatch):
    fake = types.SimpleNamespace(backend=types.SimpleNamespace(backend=lambda: "jax"))
    monkeypatch.setitem(sys.modules, "keras", fake)
    with pytest.raises(RuntimeError, match="already imported with the 'jax' backend"):
        adapter._select_backend()


# -- known issues and devices ------------------------------------------------------------------


def _case(impl, op="gn", dtype="float16", kind="normal", layout="contiguous", device="cpu"):
    return Case(op, "tensorflow", impl, (2, 6, 5, 5), OpParams(groups=2), dtype, kind, layout, device)


def test_known_issues_are_matched_narrowly(fw):
    for dtype in HALF:
        for check in ("forward", *GRADS):
            assert fw.known_issue(_case(RAW_NAME, dtype=dtype), check) is not None
            assert fw.known_issue(_case(RAW_FLOAT32_NAME, dtype=dtype), check) is None
            assert fw.known_issue(_case(KERAS_NAMES["gn"], dtype=dtype), check) is None
    assert fw.known_issue(_case(RAW_NAME, dtype="float32"), "forward") is None
    assert fw.known_issue(_case(RAW_NAME, device="cuda"), "forward") is None
    assert fw.known_issue(_case(RAW_NAME, op="rms"), "forward") is None
    overflow = fw.known_issue(_case(RAW_NAME, kind="half_range"), "forward")
    assert "beyond float16's range" in overflow.cause
    general = fw.known_issue(_case(RAW_NAME, "gn", "bfloat16", "half_range"), "forward")
    assert "beyond float16's range" not in general.cause


def test_implementation_names(fw):
    for op in OP_NAMES:
        names = [i.name for i in fw.implementations(op)]
        second = {"bn": [SYNCHRONIZED_NAME], "rms": [RMS_SCALING_NAME]}.get(op, [])
        assert names == [KERAS_NAMES[op], *second] + ([RAW_NAME, RAW_FLOAT32_NAME] if op != "rms" else [])
        assert all(i.framework == "tensorflow" and i.op == op for i in fw.implementations(op))
    assert fw.default_eps("gn", "float32") == 1e-3 and fw.default_eps("rms", "float16") == 1e-6
    assert fw.default_momentum("bn") == pytest.approx(0.01)


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="checks the message given without a GPU")
def test_cuda_refused_without_a_gpu(fw):
    assert fw.device_problem("cpu") is None
    assert fw.device_problem("cuda") == "tensorflow sees no GPU"
    assert fw.device_problem("cuda:1") == "tensorflow sees no GPU"
    assert fw.device_problem("mps") == "unknown device 'mps'"
    assert fw.device_problem("cuda:x") == "unknown device 'cuda:x'"


@pytest.mark.gpu
@pytest.mark.skipif(not tf.config.list_physical_devices("GPU"), reason="needs a GPU")
def test_gn_and_bn_on_the_gpu(fw):
    assert fw.device_problem("cuda") is None
    opts = Options(ops=("gn", "bn"), dtypes=("float32", "float64"), kinds=("normal", "large_mean"), device="cuda")
    results = list(run(plan(opts, [fw]), opts))
    assert results and {r.case.device for r in results} == {"cuda"}
    assert [r for r in results if r.status not in (PASS, SKIP)] == []
