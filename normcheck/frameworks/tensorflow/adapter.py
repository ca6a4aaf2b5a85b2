"""TensorFlow: the Keras 3 normalization layers on the TensorFlow backend, and the raw
``tf.nn.moments`` + ``tf.nn.batch_normalization`` ops, CPU and GPU."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any


def _select_backend() -> None:
    """Keras picks its backend once, at its first import: it must be TensorFlow's."""
    imported = sys.modules.get("keras")
    if imported is not None and imported.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"keras is already imported with the {imported.backend.backend()!r} backend; the tensorflow "
            "adapter needs KERAS_BACKEND=tensorflow before keras is first imported"
        )
    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO and WARNING lines


_select_backend()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from normcheck.frameworks.base import Framework, Implementation, RunOutput, Unsupported  # noqa: E402
from normcheck.frameworks.tensorflow.facts import (  # noqa: E402
    CHANNEL_OPS,
    KERAS_NAMES,
    KNOWN_ISSUES,
    RAW_FLOAT32_NAME,
    RAW_NAME,
    RAW_OPS,
    RMS_SCALING_NAME,
    SYNCHRONIZED_NAME,
    TENSORFLOW,
)
from normcheck.names import CHANNELS_LAST, CONTIGUOUS, Layout  # noqa: E402
from normcheck.ops import OpParams  # noqa: E402
from normcheck.ops._op import required  # noqa: E402
from normcheck.ops.layer_norm import AXES, NOBIAS, normalized_axes  # noqa: E402
from normcheck.problem import Problem  # noqa: E402

TF_DTYPES = {
    "float64": tf.float64,
    "float32": tf.float32,
    "float16": tf.float16,
    "bfloat16": tf.bfloat16,
}
RUNNING = ("running_mean", "running_var")
# how TensorFlow says it has no kernel of an op for a dtype (on this device)
NO_KERNEL = ("Could not find device for node", "is not in the list of allowed values")


@dataclass
class Bound:
    """An op made ready for one case: a forward callable and the variables it owns."""

    forward: Callable[[tf.Tensor, bool], tf.Tensor]
    weight: tf.Variable | keras.Variable | None = None
    bias: tf.Variable | keras.Variable | None = None
    running_mean: keras.Variable | None = None
    running_var: keras.Variable | None = None
    layer: keras.Layer | None = None  # the Keras layer behind ``forward``, if any
    # a fused add + norm: (x, residual) -> (normalized output, updated residual); forward unused
    fused: Callable[[tf.Tensor, tf.Tensor], Any] | None = None
    # an FP8-quantized norm (OpParams.quant): x -> its outputs (normcheck.frameworks.tensorflow.quantized);
    # quantized_call: x -> what the code returns, (q, scale) or q, which bench times; forward unused
    quantized: Callable[[tf.Tensor], RunOutput] | None = None
    quantized_call: Callable[[tf.Tensor], Any] | None = None


Binder = Callable[[Problem, str, str], Bound]


class TensorFlowImplementation(Implementation):
    """An op called through a ``bind(problem, layout, device) -> Bound``: the case's forward with the
    variables it owns, which ``run`` trains, runs and differentiates, and the bench module times.
    ``running_stats``: whether it keeps running statistics (else they are missing checks)."""

    framework = "tensorflow"

    def __init__(self, op: str, name: str, bind: Binder, running_stats: bool) -> None:
        self.op, self.name, self.bind, self._running_stats = op, name, bind, running_stats

    def layouts(self, shape: tuple[int, ...]) -> tuple[Layout, ...]:
        # channels-first with axis=1 and Keras's own channels-last; the two coincide for 2-D input
        if self.op in CHANNEL_OPS and len(shape) > 2:
            return (CONTIGUOUS, CHANNELS_LAST)
        return (CONTIGUOUS,)

    def unsupported(self, problem: Problem, layout: str) -> str | None:
        if problem.params.running_stats and problem.params.mode == "eval" and not self._running_stats:
            return f"{self.name} keeps no running statistics, so it has no inference mode that uses them"
        return None

    def missing_checks(self, problem: Problem) -> dict[str, str]:
        if problem.params.running_stats and not self._running_stats:
            return dict.fromkeys(RUNNING, f"{self.name} keeps no running statistics")
        return {}

    def run(self, problem: Problem, layout: str, device: str) -> RunOutput:
        try:
            with tf.device(tf_device(device)):
                return self._run(problem, layout, device)
        except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as e:
            if any(m in str(e) for m in NO_KERNEL):
                raise Unsupported(str(e).strip().splitlines()[0]) from e
            raise

    def _run(self, problem: Problem, layout: str, device: str) -> RunOutput:
        bound = self.bind(problem, layout, device)
        if bound.quantized is not None:  # inference: no gradient, no training step
            return bound.quantized(tensor(problem.x, problem.dtype, layout))
        if bound.fused is not None:
            return run_fused(bound, bound.fused, problem, layout)
        params = problem.params
        if bound.running_mean is not None:
            for batch in problem.steps:
                bound.forward(tensor(batch, problem.dtype, layout), True)
        x = tensor(problem.x, problem.dtype, layout)
        training = params.mode == "train" or not params.running_stats
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = bound.forward(x, training)
        leaves = [v for v in (bound.weight, bound.bias) if v is not None]
        dy = tensor(problem.dy, problem.dtype, layout)
        grads = tape.gradient(y, [x, *leaves], output_gradients=dy)
        out = RunOutput()
        add(out, "forward", y, layout)
        add(out, "grad_input", grads[0], layout)
        named = [name for name, v in (("grad_weight", bound.weight), ("grad_bias", bound.bias)) if v is not None]
        for name, g in zip(named, grads[1:], strict=True):
            add(out, name, g)
        if params.running_stats and bound.running_mean is not None:
            add(out, "running_mean", tf.convert_to_tensor(bound.running_mean))
            add(out, "running_var", tf.convert_to_tensor(bound.running_var))
        return out


def run_fused(bound: Bound, fused: Callable[[tf.Tensor, tf.Tensor], Any], problem: Problem, layout: str) -> RunOutput:
    """A fused add + norm: both outputs, and the gradients of x, the residual and the parameters
    for the upstream gradients of both (dy for the normalized output, dresidual for the updated
    residual), as the torch adapter's ``_run_fused``."""
    residual, dresidual = problem.fused_inputs()
    x = tensor(problem.x, problem.dtype, layout)
    r = tensor(residual, problem.dtype, layout)
    with tf.GradientTape() as tape:
        tape.watch(x)
        tape.watch(r)
        y, h = fused_outputs(fused(x, r))
    leaves = [v for v in (bound.weight, bound.bias) if v is not None]
    upstream = [tensor(problem.dy, problem.dtype, layout), tensor(dresidual, problem.dtype, layout)]
    grads = tape.gradient([y, h], [x, r, *leaves], output_gradients=upstream)
    out = RunOutput()
    add(out, "forward", y, layout)
    add(out, "residual_out", h, layout)
    add(out, "grad_input", grads[0], layout)
    add(out, "grad_residual", grads[1], layout)
    named = [name for name, v in (("grad_weight", bound.weight), ("grad_bias", bound.bias)) if v is not None]
    for name, g in zip(named, grads[2:], strict=True):
        add(out, name, g)
    return out


def fused_outputs(result: Any) -> tuple[tf.Tensor, tf.Tensor]:
    """A fused add + norm's result as (output, residual_out), refused unless it is two tensors."""
    if not isinstance(result, tuple | list) or len(result) != 2:
        raise TypeError("a fused add + norm returns (output, residual_out), two tensors")
    y, h = result
    for what, t in (("output", y), ("residual_out", h)):
        if not isinstance(t, tf.Tensor | tf.Variable):
            raise TypeError(f"a fused add + norm returns (output, residual_out); its {what} is a {type(t).__name__}")
    return y, h


def tf_device(device: str) -> str:
    if device == "cpu":
        return "/CPU:0"
    index = device.partition(":")[2] or "0"
    return f"/GPU:{index}"


def tensor(a: np.ndarray, dtype: str, layout: str = CONTIGUOUS) -> tf.Tensor:
    """A copy of ``a`` in ``dtype``, channels moved last for the channels-last layout."""
    a = np.asarray(a, dtype=np.float64)
    if layout == CHANNELS_LAST:
        a = np.moveaxis(a, 1, -1)
    # the values are exact in ``dtype``, so casting from float64 loses nothing
    return tf.cast(tf.constant(a), TF_DTYPES[dtype])


def add(out: RunOutput, check: str, t: tf.Tensor | None, layout: str = CONTIGUOUS) -> None:
    if t is None:
        raise RuntimeError(f"no {check.replace('_', ' ')} was produced")
    a = tf.cast(t, tf.float64).numpy()
    if layout == CHANNELS_LAST:
        a = np.moveaxis(a, -1, 1)
    out.add(check, a, t.dtype.name)


def layout_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    return (shape[0], *shape[2:], shape[1]) if layout == CHANNELS_LAST else tuple(shape)


def channel_axis(ndim: int, layout: str) -> int:
    return ndim - 1 if layout == CHANNELS_LAST else 1


def trailing(ndim: int, k: int) -> list[int]:
    return list(range(ndim - k, ndim))


# -- Keras layers ------------------------------------------------------------------


@lru_cache(maxsize=32)
def _keras_layer(
    op: str,
    shape: tuple[int, ...],
    params: OpParams,
    dtype: str,
    eps: float,
    momentum: float,
    layout: str,
    device: str,
    synchronized: bool = False,
) -> keras.Layer:
    """A built layer for one configuration (``shape`` already in ``layout``). Kept across cases,
    since building costs more than a case: every run assigns all of its variables first."""
    ndim, affine = len(shape), params.affine
    axis = -1 if layout == CHANNELS_LAST else 1
    if op == "bn":
        layer = keras.layers.BatchNormalization(
            axis=axis,
            momentum=momentum,
            epsilon=eps,
            center=affine,
            scale=affine,
            dtype=dtype,
            synchronized=synchronized,
        )
    elif op in ("in", "gn"):
        layer = keras.layers.GroupNormalization(
            groups=-1 if op == "in" else params.groups,
            axis=axis,
            epsilon=eps,
            center=affine,
            scale=affine,
            dtype=dtype,
        )
    elif op == "ln":  # Keras takes any axes: the trailing ones, or OpParams.axes
        axes = list(normalized_axes(shape, params))
        center = affine and params.variant != NOBIAS  # center=False: LayerNorm without bias
        layer = keras.layers.LayerNormalization(axis=axes, epsilon=eps, center=center, scale=affine, dtype=dtype)
    else:
        axes = trailing(ndim, required(params.normalized_ndim, "normalized_ndim"))
        layer = keras.layers.RMSNormalization(axis=axes, epsilon=eps, dtype=dtype)
    with tf.device(tf_device(device)):
        layer.build(shape)
    return layer


@lru_cache(maxsize=8)
def _rms_scaling_layer(shape: tuple[int, ...], k: int, dtype: str, eps: float, device: str) -> keras.Layer:
    """LayerNormalization(rms_scaling=True) over the trailing ``k`` axes, built (its beta unused)."""
    layer = keras.layers.LayerNormalization(
        axis=trailing(len(shape), k), epsilon=eps, rms_scaling=True, center=False, scale=True, dtype=dtype
    )
    with tf.device(tf_device(device)):
        layer.build(shape)
    return layer


def bind_keras_rms_scaling(p: Problem, layout: str, device: str) -> Bound:
    """Keras's other RMS norm: its gamma holds the weight (ones without one, exact)."""
    shape = layout_shape(p.shape, layout)
    k = required(p.params.normalized_ndim, "normalized_ndim")
    layer = _rms_scaling_layer(shape, k, p.dtype, p.eps, device)
    weight = _assign(layer.gamma, p.weight if p.weight is not None else np.ones(shape[len(shape) - k :]), p.dtype)
    return Bound(lambda x, train: layer(x), weight if p.weight is not None else None, layer=layer)


def _assign(variable: keras.Variable, value: np.ndarray, dtype: str) -> keras.Variable:
    variable.assign(tensor(value, dtype))
    return variable


def bind_keras(p: Problem, layout: str, device: str, synchronized: bool = False) -> Bound:
    momentum = TENSORFLOW["bn"].to_framework_momentum(p.momentum) if p.op == "bn" else 0.0
    shape = layout_shape(p.shape, layout)
    layer = _keras_layer(p.op, shape, p.params, p.dtype, p.eps, momentum, layout, device, synchronized)
    if p.op == "rms":
        # RMSNormalization always has a scale: without an affine weight it stays at 1 (exact)
        k = required(p.params.normalized_ndim, "normalized_ndim")
        scale = p.weight if p.weight is not None else np.ones(shape[len(shape) - k :])
        weight = _assign(layer.scale, scale, p.dtype)
        return Bound(lambda x, train: layer(x), weight if p.weight is not None else None, layer=layer)
    weight = None if p.weight is None else _assign(layer.gamma, p.weight, p.dtype)
    bias = None if p.bias is None else _assign(layer.beta, p.bias, p.dtype)
    if p.op != "bn":
        return Bound(lambda x, train: layer(x), weight, bias, layer=layer)
    running_mean, running_var = p.initial_running()  # batch norm cases always track them
    mean = _assign(layer.moving_mean, running_mean, p.dtype)
    var = _assign(layer.moving_variance, running_var, p.dtype)
    return Bound(lambda x, train: layer(x, training=train), weight, bias, mean, var, layer)


def bind_keras_synchronized(p: Problem, layout: str, device: str) -> Bound:
    """BatchNormalization(synchronized=True), on one replica: its statistics take the cross-replica path."""
    return bind_keras(p, layout, device, synchronized=True)


# -- tf.nn.moments + tf.nn.batch_normalization -------------------------------------


def _variable(a: np.ndarray | None, dtype: str) -> tf.Variable | None:
    return None if a is None else tf.Variable(tensor(a, dtype))


def _param(v: tf.Variable | None, shape: list[int], compute: tf.DType) -> tf.Tensor | None:
    return None if v is None else tf.cast(tf.reshape(v, shape), compute)


def _moments_norm(
    x: tf.Tensor, axes: list[int], scale: tf.Tensor | None, offset: tf.Tensor | None, eps: float
) -> tf.Tensor:
    mean, variance = tf.nn.moments(x, axes, keepdims=True)
    return tf.nn.batch_normalization(x, mean, variance, offset, scale, eps)


def _raw_view(p: Problem, layout: str) -> tuple[list[int], list[int], list[int]]:
    """(view of x, axes of the statistics in it, shape the affine parameters take in it)."""
    shape = list(layout_shape(p.shape, layout))
    ndim = len(shape)
    if p.op == "ln":
        axes = normalized_axes(p.shape, p.params)
        return shape, list(axes), [n if a in axes else 1 for a, n in enumerate(shape)]
    c_axis = channel_axis(ndim, layout)
    c = shape[c_axis]
    if p.op == "gn":
        # channels split into G contiguous groups: statistics per sample and group
        g = required(p.params.groups, "groups")
        view = [*shape[:c_axis], g, c // g, *shape[c_axis + 1 :]]
        pview = [1] * len(view)
        pview[c_axis : c_axis + 2] = [g, c // g]
        return view, [a for a in range(1, len(view)) if a != c_axis], pview
    pview = [1] * ndim
    pview[c_axis] = c
    first = 0 if p.op == "bn" else 1  # batch norm reduces over the batch too
    return shape, [a for a in range(first, ndim) if a != c_axis], pview


def raw_binder(upcast: bool) -> Binder:
    """The raw ops in the input dtype, or (``upcast``) with half inputs and parameters cast to
    float32 first and the result cast back, as the Keras layers do."""

    def bind(p: Problem, layout: str, device: str) -> Bound:
        w, b = _variable(p.weight, p.dtype), _variable(p.bias, p.dtype)
        view, axes, pview = _raw_view(p, layout)
        shape = list(layout_shape(p.shape, layout))
        dtype = TF_DTYPES[p.dtype]
        compute = tf.float64 if dtype == tf.float64 else tf.float32 if upcast else dtype

        def forward(x: tf.Tensor, train: bool) -> tf.Tensor:
            xv = tf.cast(tf.reshape(x, view), compute)
            y = _moments_norm(xv, axes, _param(w, pview, compute), _param(b, pview, compute), p.eps)
            return tf.cast(tf.reshape(y, shape), dtype)

        return Bound(forward, w, b)

    return bind


class TensorFlowFramework(Framework):
    name = "tensorflow"
    conventions = TENSORFLOW
    known_issues = KNOWN_ISSUES

    def implementations(self, op: str) -> list[Implementation]:
        if op not in KERAS_NAMES:  # no fused add + norm, no adaLN built in
            return []
        impls: list[Implementation] = [TensorFlowImplementation(op, KERAS_NAMES[op], bind_keras, op == "bn")]
        if op == "rms":
            impls.append(TensorFlowImplementation(op, RMS_SCALING_NAME, bind_keras_rms_scaling, False))
        if op == "bn":
            impls.append(TensorFlowImplementation(op, SYNCHRONIZED_NAME, bind_keras_synchronized, True))
        if op in RAW_OPS:
            impls.append(TensorFlowImplementation(op, RAW_NAME, raw_binder(upcast=False), False))
            impls.append(TensorFlowImplementation(op, RAW_FLOAT32_NAME, raw_binder(upcast=True), False))
        if op == "ln":  # LayerNormalization(axis=..., center=False) and tf.nn.moments take any axes, no bias
            for impl in impls:
                impl.extensions = frozenset({AXES, NOBIAS})
        return impls

    def device_problem(self, device: str) -> str | None:
        if device == "cpu":
            return None
        index = device.partition(":")[2] or "0"
        if device.partition(":")[0] == "cuda" and index.isdigit():
            gpus = tf.config.list_physical_devices("GPU")
            if not gpus:
                return "tensorflow sees no GPU"
            return None if int(index) < len(gpus) else f"tensorflow sees {len(gpus)} GPU(s), no {device}"
        return f"unknown device {device!r}"


def framework() -> Framework:
    return TensorFlowFramework()
