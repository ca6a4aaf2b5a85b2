"""The TensorFlow forms: keras_layer, a keras.layers.Layer subclass with the constructor of the
Keras 3 layer, and tf_function, a raw TensorFlow function (eager or tf.function) bound by its
parameters' names (normcheck.user.binding), on the layout ``--layout`` names (nhwc by default).

keras_layer: normcheck constructs the class for every case, as the matching Keras layer would be
(instance norm as ``GroupNormalization(groups=-1)``), builds it for channels-last input, sets
its weights and moving statistics to the case's values and runs it through the TensorFlow
adapter. Importing this module selects Keras's TensorFlow backend.

Two ops have one calling convention each, the PyTorch forms' (normcheck.frameworks.torch.forms),
instead of a binding by name: a fused residual add + norm (``add_rms``, ``add_ln``) is called
``fn(x, residual, weight, eps)`` / ``fn(x, residual, weight, bias, eps)`` (``fused_call``), a
Keras layer constructed as RMSNormalization / LayerNormalization ``layer(x, residual)``, either
returning ``(output, residual_out)``; adaLN (``adaln``) is ``fn(x, shift, scale, eps)`` bound by
those names (normcheck.user.modulation), a Keras layer ``cls(epsilon=...)`` called
``layer(x, shift, scale)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

# keras and tf as the adapter imported them, after selecting Keras's TensorFlow backend
from normcheck.frameworks.base import Unsupported
from normcheck.frameworks.tensorflow.adapter import (
    CHANNEL_OPS,
    KERAS_NAMES,
    Binder,
    Bound,
    TensorFlowImplementation,
    keras,
    layout_shape,
    tensor,
    tf,
    trailing,
)
from normcheck.frameworks.tensorflow.calls import VariableWatch, construct, eps_parameter, watched
from normcheck.frameworks.tensorflow.facts import KERAS_DEFAULTS as DEFAULTS
from normcheck.frameworks.tensorflow.facts import KERAS_OPTIONAL as OPTIONAL
from normcheck.frameworks.tensorflow.facts import TENSORFLOW, VARIABLE_NAMES
from normcheck.names import CHANNELS_LAST, CONTIGUOUS, Layout
from normcheck.ops import FUSED_BASE, OPS, OpParams
from normcheck.ops._op import required
from normcheck.ops.adaptive_layer_norm import ADALN, stray_affine
from normcheck.ops.fused_add import FUSED_ADD
from normcheck.ops.layer_norm import NOBIAS
from normcheck.ops.rms_norm import GEMMA
from normcheck.problem import Problem
from normcheck.user.binding import BoundFunction, creates_variables_message, python_function
from normcheck.user.modulation import bind_modulation

WEIGHT_NAMES, BIAS_NAMES = VARIABLE_NAMES["weight"], VARIABLE_NAMES["bias"]
MEAN_NAMES, VAR_NAMES = VARIABLE_NAMES["running_mean"], VARIABLE_NAMES["running_var"]


def constructor_args(
    op: str, ndim: int, params: OpParams, eps: float, framework_momentum: float | None, omit_defaults: bool
) -> dict[str, Any]:
    """The keyword arguments the Keras layer of ``op`` takes for the case (``dtype`` aside).

    ``axis`` is -1 (the channels, or the last axis) or the list of trailing normalized axes.
    With ``omit_defaults`` eps and momentum are left out, and so is every other argument equal
    to Keras's default."""
    args: dict[str, Any] = {}
    if op in ("in", "gn"):
        args["groups"] = -1 if op == "in" else params.groups
    if op in CHANNEL_OPS:
        args["axis"] = -1
    elif params.axes is not None:  # --axes: LayerNormalization(axis=[...]) takes any
        args["axis"] = list(params.axes)
    else:
        k = required(params.normalized_ndim, "normalized_ndim")
        args["axis"] = -1 if k == 1 else trailing(ndim, k)
    if op == "bn":
        args["momentum"] = framework_momentum
    args["epsilon"] = eps
    if op != "rms":
        args["center"] = args["scale"] = params.affine
        if params.variant == NOBIAS:  # layer norm without bias: LayerNormalization(center=False)
            args["center"] = False
    if omit_defaults:
        defaults = DEFAULTS[op]
        args = {a: v for a, v in args.items() if a not in OPTIONAL and v != defaults[a]}
    return args


def find_variable(layer: keras.Layer, names: tuple[str, ...]) -> Any:
    """The layer's variable under the first of ``names`` (an attribute, else a weight's name)."""
    for n in names:
        v = getattr(layer, n, None)
        if v is not None and hasattr(v, "assign"):
            return v
    by_name = {getattr(w, "name", None): w for w in layer.weights}
    return next((by_name[n] for n in names if n in by_name), None)


def _names(names: tuple[str, ...]) -> str:
    quoted = [f"'{n}'" for n in names]
    return ", ".join(quoted[:-1]) + f" or {quoted[-1]}"


def set_variable(layer: keras.Layer, names: tuple[str, ...], value: np.ndarray, dtype: str, required: bool) -> Any:
    """Assign ``value`` (exact in ``dtype``) to the layer's variable; None when it has none and
    none is ``required``."""
    v = find_variable(layer, names)
    if v is None:
        if required:
            raise AttributeError(f"{type(layer).__name__} has no variable {_names(names)} after build()")
        return None
    if tuple(v.shape) != tuple(value.shape):
        raise ValueError(f"{type(layer).__name__}.{v.name} has shape {tuple(v.shape)}, expected {tuple(value.shape)}")
    v.assign(tf.cast(tensor(value, dtype), v.dtype))
    return v


def keras_binder(cls: type, op: str, omit_defaults: bool) -> Binder:
    def bind(p: Problem, layout: str, device: str) -> Bound:
        shape = layout_shape(p.shape, layout)
        momentum = TENSORFLOW["bn"].to_framework_momentum(p.momentum) if op == "bn" else None
        args = constructor_args(op, len(shape), p.params, p.eps, momentum, omit_defaults)
        layer = construct(cls, {**args, "dtype": p.dtype})
        if not layer.built:
            layer.build(shape)
        weight = bias = mean = var = None
        if p.weight is not None:
            weight = set_variable(layer, WEIGHT_NAMES, p.weight, p.dtype, required=True)
        elif op == "rms":
            # Keras's RMSNormalization always has a scale: without an affine weight it multiplies
            # by 1 (Gemma's stored offset 0)
            scale_shape = shape[len(shape) - required(p.params.normalized_ndim, "normalized_ndim") :]
            unit = np.zeros(scale_shape) if p.params.variant == GEMMA else np.ones(scale_shape)
            set_variable(layer, WEIGHT_NAMES, unit, p.dtype, required=False)
        if p.bias is not None:
            bias = set_variable(layer, BIAS_NAMES, p.bias, p.dtype, required=True)
        if op == "bn":
            running_mean, running_var = p.initial_running()  # batch norm cases always track them
            mean = set_variable(layer, MEAN_NAMES, running_mean, p.dtype, required=True)
            var = set_variable(layer, VAR_NAMES, running_var, p.dtype, required=True)
        return Bound(lambda x, train: layer(x, training=train), weight, bias, mean, var, layer)

    return bind


def keras_fused_binder(cls: type, op: str, omit_defaults: bool) -> Binder:
    """A fused add + norm as a Keras layer: constructed, built and given the case's weights as the
    layer of its norm (``keras_binder``), called ``layer(x, residual) -> (output, residual_out)``
    (vLLM's RMSNorm.forward(x, residual))."""
    plain = keras_binder(cls, FUSED_BASE[op], omit_defaults)

    def bind(p: Problem, layout: str, device: str) -> Bound:
        bound = plain(p, layout, device)
        layer = bound.layer
        if layer is None:  # keras_binder always keeps its layer
            raise RuntimeError("no Keras layer was bound")
        return replace(bound, forward=_no_plain_forward, fused=lambda x, residual: layer(x, residual))

    return bind


def _affine_kind(variable: Any) -> str | None:
    """The role ("weight" or "bias") of a variable named as a Keras layer's own gamma or beta, else None."""
    name = str(getattr(variable, "name", "")).rpartition("/")[2].partition(":")[0]
    return "weight" if name in WEIGHT_NAMES else "bias" if name in BIAS_NAMES else None


def keras_modulation_binder(cls: type, omit_defaults: bool) -> Binder:
    """adaLN as a Keras layer: ``cls(epsilon=...)`` (eps by the name its constructor takes, left
    out in the defaults call style), built for x of shape (N, T, D), called ``layer(x, shift,
    scale)`` bound by its call's names. Its own (D,) gamma/weight and beta/bias, which adaLN's norm
    has none of, get ``stray_affine``'s values, so a layer norm's affine left in shows."""
    owner = getattr(cls, "__name__", str(cls))
    eps_name = eps_parameter(cls)

    def bind(p: Problem, layout: str, device: str) -> Bound:
        if p.weight is None or p.bias is None:
            raise ValueError("an adaptive layer norm case has a shift and a scale")
        width = p.shape[-1]
        kwargs: dict[str, Any] = {} if omit_defaults or eps_name is None else {eps_name: p.eps}
        layer = construct(cls, {**kwargs, "dtype": p.dtype})
        if not layer.built:
            layer.build(tuple(p.shape))
        stray = dict(zip(("weight", "bias"), stray_affine(width, p.dtype), strict=True))
        for v in layer.weights:
            kind = _affine_kind(v)
            if kind is not None and tuple(v.shape) == (width,):
                v.assign(tf.cast(tensor(stray[kind], p.dtype), v.dtype))
        call = bind_modulation(layer.call, owner + ".call")
        scale, shift = tf.Variable(tensor(p.weight, p.dtype)), tf.Variable(tensor(p.bias, p.dtype))

        def forward(x: tf.Tensor, train: bool) -> tf.Tensor:
            return _tensor_result(owner, call.call(layer, x, shift, scale, None))

        return Bound(forward, scale, shift, layer=layer)

    return bind


class KerasLayerImplementation(TensorFlowImplementation):
    """A user's Keras layer: channels-last input for batch, instance and group norm."""

    def layouts(self, shape: tuple[int, ...]) -> tuple[Layout, ...]:
        return (CHANNELS_LAST,) if self.op in CHANNEL_OPS and len(shape) > 2 else (CONTIGUOUS,)

    def unsupported(self, problem: Problem, layout: str) -> str | None:
        if problem.params.running_stats and problem.params.mode == "eval" and self.op != "bn":
            return f"{KERAS_NAMES[self.op]} keeps no running statistics, so it has no inference mode"
        return None

    def missing_checks(self, problem: Problem) -> dict[str, str]:
        if problem.params.running_stats and self.op != "bn":
            return dict.fromkeys(("running_mean", "running_var"), f"{KERAS_NAMES[self.op]} keeps no running statistics")
        return {}


class KerasModulationImplementation(KerasLayerImplementation):
    """adaLN as a Keras layer (``keras_modulation_binder``)."""

    def __init__(self, cls: type, name: str, omit_defaults: bool) -> None:
        self.owner, self.omit_defaults = getattr(cls, "__name__", str(cls)), omit_defaults
        self.takes_eps = eps_parameter(cls) is not None
        super().__init__(ADALN, name, keras_modulation_binder(cls, omit_defaults), running_stats=False)

    def unsupported(self, problem: Problem, layout: str) -> str | None:
        if not self.omit_defaults and not self.takes_eps:
            return f"{self.owner}(...) takes no eps: its own eps is checked in the defaults call style only"
        return None


# -- raw TensorFlow functions, bound by their parameters' names (normcheck.user.binding) --------


def _stats_dtype(dtype: str) -> str:
    return "float32" if dtype in ("float16", "bfloat16") else dtype


def function_binder(bound: BoundFunction) -> Binder:
    """Calls the bound function on tf tensors (x in its layout), gamma and beta as tf.Variables of
    shape (C,) (reshaped in the call for ``--param-shape broadcast``), running statistics as
    tf.Variables it assigns to, or returns new values of as ``(y, new_mean, new_var)``."""
    op = bound.op

    def bind(p: Problem, layout: str, device: str) -> Bound:
        weight = None if p.weight is None else tf.Variable(tensor(p.weight, p.dtype))
        bias = None if p.bias is None else tf.Variable(tensor(p.bias, p.dtype))
        mean = var = None
        momentum = None
        if op == "bn" and p.params.running_stats and bound.binding.has("running_mean"):
            running_mean, running_var = p.initial_running()
            mean = tf.Variable(tensor(running_mean, _stats_dtype(p.dtype)))
            var = tf.Variable(tensor(running_var, _stats_dtype(p.dtype)))
            momentum = TENSORFLOW["bn"].to_framework_momentum(p.momentum)

        def forward(x: tf.Tensor, train: bool) -> tf.Tensor:
            values = bound.values(x, p, weight, bias, mean, var, train, momentum, lambda a, s: tf.reshape(a, s))
            watch = VariableWatch()
            with tf.variable_creator_scope(watch):
                out = bound.call(values)
            if watch.created:
                raise TypeError(creates_variables_message(bound.label, f"tf.Variable {watch.created[0]!r}"))
            if isinstance(out, tuple | list):
                if mean is None or var is None or len(out) != 3:
                    raise TypeError(
                        f"{bound.label} returned a {type(out).__name__} of {len(out)}; it must return the output "
                        "tensor, or (y, new_running_mean, new_running_var) when given running statistics"
                    )
                y, new_mean, new_var = out
                if new_mean is not mean:
                    mean.assign(tf.cast(new_mean, mean.dtype))
                if new_var is not var:
                    var.assign(tf.cast(new_var, var.dtype))
                out = y
            if not isinstance(out, tf.Tensor | tf.Variable):
                raise TypeError(f"{bound.label} returned a {type(out).__name__}, not a tf.Tensor")
            return out

        return Bound(forward, weight, bias, mean, var)

    return bind


class FunctionImplementation(TensorFlowImplementation):
    """A raw TensorFlow function (eager or tf.function) bound by name: batch, instance and group
    norm on the layout ``--layout`` names, layer and RMS norm on the trailing axes."""

    def __init__(self, bound: BoundFunction, name: str) -> None:
        self.bound = bound
        super().__init__(bound.op, name, function_binder(bound), running_stats=bound.op == "bn")
        # the variants call it the same way: Gemma's stored weight (the function adds the 1), no bias
        self.extensions = frozenset({GEMMA, NOBIAS})

    def layouts(self, shape: tuple[int, ...]) -> tuple[Layout, ...]:
        return (CHANNELS_LAST,) if self.bound.channels_last(len(shape)) else (CONTIGUOUS,)

    def unsupported(self, problem: Problem, layout: str) -> str | None:
        return self.bound.problem(problem) or super().unsupported(problem, layout)

    def missing_checks(self, problem: Problem) -> dict[str, str]:
        return {**super().missing_checks(problem), **self.bound.missing_checks(problem)}


# -- fused add + norm and adaLN as raw TensorFlow functions (the PyTorch forms' conventions) -----


def _label(fn: Any, name: str) -> str:
    return str(getattr(python_function(fn), "__name__", None) or name)


def _no_plain_forward(x: tf.Tensor, train: bool) -> tf.Tensor:
    """A fused case's forward of x alone, which nothing calls (verify and the bench call ``fused``)."""
    raise Unsupported("a fused add + norm is called with (x, residual), through Bound.fused")


def _tensor_result(label: str, out: Any) -> tf.Tensor:
    if not isinstance(out, tf.Tensor | tf.Variable):
        raise TypeError(f"{label} returned a {type(out).__name__}, not a tf.Tensor")
    return out


def fused_call(p: Problem, x: tf.Tensor, residual: tf.Tensor, w: Any, b: Any) -> list[object]:
    """The arguments of a fused add + norm function, all positional, eps always given, as the
    PyTorch function form's: ``add_rms(x, residual, weight, eps)``, ``add_ln(x, residual, weight,
    bias, eps)``, returning ``(output, residual_out)``, residual_out = x + residual in the input
    dtype. A case without a weight (affine off) passes ones, which collect no gradient."""
    if w is None:
        w = tf.ones(OPS[p.op].param_shape(p.shape, p.params), dtype=x.dtype)
    if p.op == "add_rms":
        return [x, residual, w, p.eps]
    return [x, residual, w, b, p.eps]


class FusedFunctionImplementation(TensorFlowImplementation):
    """A fused add + norm as a raw TensorFlow function (eager or tf.function), called as
    ``fused_call`` says; it computes Gemma's 1 + weight and layer norm without bias itself."""

    def __init__(self, op: str, fn: Callable[..., Any], name: str) -> None:
        self.fn, self.label = fn, _label(fn, name)
        super().__init__(op, name, self._bind, running_stats=False)
        self.extensions = frozenset({GEMMA, NOBIAS, FUSED_ADD})

    def _bind(self, p: Problem, layout: str, device: str) -> Bound:
        weight = None if p.weight is None else tf.Variable(tensor(p.weight, p.dtype))
        bias = None if p.bias is None else tf.Variable(tensor(p.bias, p.dtype))

        def fused(x: tf.Tensor, residual: tf.Tensor) -> Any:
            return watched(self.label, self.fn, *fused_call(p, x, residual, weight, bias))

        return Bound(_no_plain_forward, weight, bias, fused=fused)


class ModulationFunction(TensorFlowImplementation):
    """adaLN as a raw TensorFlow function, ``fn(x, shift, scale, eps)`` bound by its names
    (normcheck.user.modulation), always given eps where it takes one (the defaults call style:
    DiT's 1e-6), as the PyTorch function form's."""

    def __init__(self, fn: Callable[..., Any], name: str, omit_defaults: bool) -> None:
        self.fn, self.omit_defaults, self.label = fn, omit_defaults, _label(fn, name)
        self.call = bind_modulation(fn, self.label)  # BindingError here: a usage error at load, not a row per case
        super().__init__(ADALN, name, self._bind, running_stats=False)

    def unsupported(self, problem: Problem, layout: str) -> str | None:
        if not self.omit_defaults and not self.call.takes_eps:
            return f"{self.label} takes no eps parameter: its own eps is checked in the defaults call style only"
        return None

    def _bind(self, p: Problem, layout: str, device: str) -> Bound:
        if p.weight is None or p.bias is None:
            raise ValueError("an adaptive layer norm case has a shift and a scale")
        scale, shift = tf.Variable(tensor(p.weight, p.dtype)), tf.Variable(tensor(p.bias, p.dtype))

        def forward(x: tf.Tensor, train: bool) -> tf.Tensor:
            return _tensor_result(self.label, watched(self.label, self.call.call, self.fn, x, shift, scale, p.eps))

        return Bound(forward, scale, shift)
