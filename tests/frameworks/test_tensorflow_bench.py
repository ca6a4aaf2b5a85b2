"""The TensorFlow bench target: the Keras layers, the raw tf.nn ops and the user's Keras layers,
forward and backward, eager, tf.function and tf.function+XLA, timed on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
from _bench_cases import GRAD_CASES
from _require import require

tf = require("tensorflow")

from fixtures import keras_layers
from normcheck import frameworks
from normcheck.bench.inputs import bench_problem
from normcheck.bench.records import BACKWARD, FORWARD, PASSES
from normcheck.bench.timer import TimerSettings, measure_host
from normcheck.frameworks import bench_module
from normcheck.frameworks.base import Unsupported
from normcheck.frameworks.tensorflow import forms as user_keras
from normcheck.frameworks.tensorflow.adapter import RAW_NAME, Bound, TensorFlowImplementation, layout_shape
from normcheck.ops import OpParams

target = bench_module("tensorflow")
VARIANTS = ("eager", "tf.function", "tf.function+XLA")
TINY = TimerSettings(min_time=0.002, max_time=0.02, warmup=0.001)
CASES = GRAD_CASES
USER_CLASSES = {"gn": keras_layers.GroupNorm, "bn": keras_layers.BatchNorm, "rms": keras_layers.RMSNorm}


def keras_impl(op: str) -> TensorFlowImplementation:
    return frameworks.load("tensorflow").implementations(op)[0]


def raw_impl(op: str) -> TensorFlowImplementation:
    return next(i for i in frameworks.load("tensorflow").implementations(op) if i.name == RAW_NAME)


def user_impl(op: str) -> TensorFlowImplementation:
    cls = USER_CLASSES[op]
    return user_keras.build("keras_layer", op, cls, cls.__name__, omit_defaults=False)


def problem(op: str, dtype: str = "float32"):
    shape, params = CASES[op]
    return bench_problem(op, shape, params, dtype)


def values(t) -> np.ndarray:
    return tf.cast(t, tf.float64).numpy()


def check_result(impl, p, pass_: str, out) -> None:
    shape = layout_shape(p.shape, target.layout(impl, p.shape))
    if pass_ == FORWARD:
        assert tuple(out.shape) == shape and np.isfinite(values(out)).all()
        return
    grads = list(out)
    assert tuple(grads[0].shape) == shape
    assert len(grads) == 1 + (p.weight is not None) + (p.bias is not None)
    assert all(g is not None and np.isfinite(values(g)).all() for g in grads)


def run(impl, p, pass_: str, variant: str):
    t = target.build(impl, p, pass_, variant, "cpu")
    assert t.mode == variant and t.compiled == (variant != "eager") and t.memory is None
    m = measure_host(t, TINY)
    assert m.samples and all(s > 0 and np.isfinite(s) for s in m.samples)
    out = t.call()
    t.sync(out)
    check_result(impl, p, pass_, out)
    return t


def test_modes_and_layouts():
    assert target.MODES == {"eager": ("eager",), "compiled": ("tf.function", "tf.function+XLA")}
    assert target.layout(keras_impl("gn"), (2, 4, 3, 3)) == "channels_last"
    assert target.layout(keras_impl("gn"), (5, 4)) == "contiguous"
    assert target.layout(raw_impl("bn"), (3, 4, 5)) == "channels_last"
    assert target.layout(keras_impl("ln"), (2, 3, 8)) == "contiguous"
    assert target.layout(user_impl("gn"), (2, 4, 3, 3)) == "channels_last"


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("op", list(CASES))
def test_keras_layer(op, pass_, variant):
    run(keras_impl(op), problem(op), pass_, variant)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("op", ["gn", "bn"])
def test_raw_ops(op, pass_, variant):
    run(raw_impl(op), problem(op), pass_, variant)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("op", ["gn", "rms"])  # batch norm: in the running statistics' test
def test_user_keras_layer(op, pass_, variant):
    run(user_impl(op), problem(op), pass_, variant)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("impl", [keras_impl, user_impl], ids=["keras", "user"])
def test_batch_norm_forward_updates_running_stats_and_backward_does_not(impl, variant):
    bn, p = impl("bn"), problem("bn")
    forward = target.build(bn, p, FORWARD, variant, "cpu")
    bound_mean = next(o for o in forward.keep if isinstance(o, Bound)).running_mean
    before = bound_mean.numpy().copy()
    forward.sync(forward.call())
    assert not np.array_equal(bound_mean.numpy(), before)

    backward = target.build(bn, p, BACKWARD, variant, "cpu")
    mean = next(o for o in backward.keep if isinstance(o, Bound)).running_mean
    after_build = mean.numpy().copy()  # the one forward recorded while building
    for _ in range(3):
        backward.sync(backward.call())
    assert np.array_equal(mean.numpy(), after_build), "a backward call re-ran the forward"


@pytest.mark.parametrize("op", ["gn", "bn"])
def test_compiled_backward_gives_the_eager_gradients(op):
    impl, p = keras_impl(op), problem(op, "float64")
    eager = [values(g) for g in target.build(impl, p, BACKWARD, "eager", "cpu").call()]
    for variant in ("tf.function", "tf.function+XLA"):
        t = target.build(impl, p, BACKWARD, variant, "cpu")
        assert t.setup_compile_s > 0
        got = [values(g) for g in t.call()]
        assert len(got) == len(eager)
        for a, b in zip(got, eager, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def _half_determinant_binder(p, layout, device):
    """A forward using an op TensorFlow has no float16 CPU kernel for (nor XLA)."""

    def forward(x, train):
        return x * tf.linalg.det(tf.eye(2, dtype=x.dtype))

    return Bound(forward)


@pytest.mark.parametrize("variant", VARIANTS)
def test_missing_dtype_kernel_is_unsupported_or_a_skip(variant):
    impl = TensorFlowImplementation("ln", "det", _half_determinant_binder, False)
    p = problem("ln", "float16")
    with pytest.raises(Unsupported, match="MatrixDeterminant"):
        target.build(impl, p, BACKWARD, variant, "cpu")  # the forward runs while building
    t = target.build(impl, p, FORWARD, variant, "cpu")
    with pytest.raises(Exception) as info:
        t.sync(t.call())
    assert target.classify(info.value) == "skip"


def test_running_stats_in_eval_are_unsupported_without_them():
    p = bench_problem("gn", (2, 4, 3), OpParams(groups=2, mode="eval", running_stats=True), "float32")
    with pytest.raises(Unsupported, match="running statistics"):
        target.build(keras_impl("gn"), p, FORWARD, "eager", "cpu")


def test_a_non_tensorflow_implementation_is_unsupported():
    class Other:
        name = "other"

    with pytest.raises(Unsupported, match="not a TensorFlow implementation"):
        target.build(Other(), problem("ln"), FORWARD, "eager", "cpu")


def test_classify():
    assert target.classify(tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")) == "oom"
    assert target.classify(tf.errors.InternalError(None, None, "RESOURCE_EXHAUSTED: Out of memory")) == "oom"
    no_kernel = tf.errors.NotFoundError(None, None, "Could not find device for node: {{node Lgamma}}")
    assert target.classify(no_kernel) == "skip"
    assert target.classify(tf.errors.InvalidArgumentError(None, None, "Incompatible shapes")) is None
    assert target.classify(ValueError("Could not find device for node")) is None


def test_set_threads_after_the_runtime_started(monkeypatch):
    tf.add(1.0, 1.0)  # the runtime is initialised: its thread pools can no longer change
    configured = tf.config.threading.get_intra_op_parallelism_threads()
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "2")
    assert target.set_threads(configured + 3) == (configured or 2)
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS")
    assert target.set_threads(configured + 3) == (configured or None)


def test_cpu_sync_and_device_sync_run():
    t = target.build(keras_impl("ln"), problem("ln"), FORWARD, "eager", "cpu")
    assert t.sync(t.call()) is None
    assert target.device_sync(True)(None) is None  # synchronises every logical device, the CPU here
