"""The TensorFlow forms: keras_layer, a keras.layers.Layer subclass with the constructor of the
Keras 3 layer, and tf_function, a raw TensorFlow function (eager or tf.function) bound by its
parameters' names (normcheck.user.binding), on the layout ``--layout`` names (nhwc by default).

keras_layer: normcheck constructs the class for every case, as the matching Keras layer would be
(instance norm as ``GroupNormalization(groups=-1)``), builds it for channels-last input, sets
its weights and moving statistics to the case's values and runs it through the TensorFlow
adapter. Importing this module selects Keras's TensorFlow backend.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# keras and tf as the adapter imported them, after selecting Keras's TensorFlow backend
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
from normcheck.frameworks.tensorflow.facts import KERAS_DEFAULTS as DEFAULTS
from normcheck.frameworks.tensorflow.facts import KERAS_OPTIONAL as OPTIONAL
from normcheck.frameworks.tensorflow.facts import TENSORFLOW, VARIABLE_NAMES
from normcheck.names import CHANNELS_LAST, CONTIGUOUS, Layout
from normcheck.ops import OpParams
from normcheck.ops._op import required
from normcheck.ops.layer_norm import NOBIAS
from normcheck.ops.rms_norm import GEMMA
from normcheck.problem import Problem
from normcheck.user.binding import BoundFunction, creates_variables_message

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
    else:
        k = required(params.normalized_ndim, "normalized_ndim")
        args["axis"] = -1 if k == 1 else trailing(ndim, k)
    if op == "bn":
        args["momentum"] = framework_momentum
    args["epsilon"] = eps
    if op != "rms":
        args["center"] = args["scale"] = params.affine
    if omit_defaults:
        defaults = DEFAULTS[op]
        args = {a: v for a, v in args.items() if a not in OPTIONAL and v != defaults[a]}
    return args


def _call_text(cls: type, args: dict[str, Any]) -> str:
    return f"{cls.__name__}({', '.join(f'{a}={v!r}' for a, v in args.items())})"


def construct(cls: type, args: dict[str, Any]) -> keras.Layer:
    try:
        layer = cls(**args)
    except TypeError as e:
        raise TypeError(
            f"{_call_text(cls, args)} failed ({e}); its constructor must take the arguments of the Keras layer "
            "and pass the others (dtype) on to keras.layers.Layer"
        ) from e
    if not isinstance(layer, keras.Layer):
        raise TypeError(f"{_call_text(cls, args)} returned a {type(layer).__name__}, not a keras.layers.Layer")
    return layer


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
            # Keras's RMSNormalization always has a scale: without an affine weight it stays at 1
            scale_shape = shape[len(shape) - required(p.params.normalized_ndim, "normalized_ndim") :]
            set_variable(layer, WEIGHT_NAMES, np.ones(scale_shape), p.dtype, required=False)
        if p.bias is not None:
            bias = set_variable(layer, BIAS_NAMES, p.bias, p.dtype, required=True)
        if op == "bn":
            running_mean, running_var = p.initial_running()  # batch norm cases always track them
            mean = set_variable(layer, MEAN_NAMES, running_mean, p.dtype, required=True)
            var = set_variable(layer, VAR_NAMES, running_var, p.dtype, required=True)
        return Bound(lambda x, train: layer(x, training=train), weight, bias, mean, var, layer)

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


# -- raw TensorFlow functions, bound by their parameters' names (normcheck.user.binding) --------


def _stats_dtype(dtype: str) -> str:
    return "float32" if dtype in ("float16", "bfloat16") else dtype


class _VariableWatch:
    """Records the variables created while the user's function runs (TF1-style code, or a
    function that makes its own gamma and beta)."""

    def __init__(self) -> None:
        self.created: list[str] = []

    def __call__(self, next_creator: Any, **kwargs: Any) -> Any:
        self.created.append(str(kwargs.get("name") or "unnamed"))
        return next_creator(**kwargs)


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
            watch = _VariableWatch()
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


def build(
    form: str, op: str, obj: object, name: str, omit_defaults: bool, backward: object | None = None
) -> TensorFlowImplementation:
    if form == "tf_function":
        if not isinstance(obj, BoundFunction):  # normcheck.user binds the function by name first
            raise TypeError(f"the tf_function form takes a function bound by name, not a {type(obj).__name__}")
        return FunctionImplementation(obj, name)
    if form != "keras_layer":
        raise ValueError(f"the tensorflow forms have no form {form!r}")
    if not isinstance(obj, type):  # normcheck.user.detect_form gives this form classes only
        raise TypeError(f"the keras_layer form takes a keras.layers.Layer subclass, not a {type(obj).__name__}")
    return KerasLayerImplementation(op, name, keras_binder(obj, op, omit_defaults), running_stats=op == "bn")
