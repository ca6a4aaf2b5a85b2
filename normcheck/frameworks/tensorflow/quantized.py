"""TensorFlow user code with FP8-quantized output (``--quantize``): how it is called on a quantized
case, and how what it returns becomes the case's outputs, as the PyTorch forms'
(normcheck.frameworks.torch.quantized) translated to TensorFlow.

A raw TensorFlow function (eager or tf.function) is called with the arguments of the
torch.nn.functional op, all positional, eps always given, and for a static scale the scale last:

    rms: fn(x, normalized_shape, weight, eps[, scale])
    ln:  fn(x, normalized_shape, weight, bias, eps[, scale])

normalized_shape a tuple of ints, weight and bias tf.Variables of that shape (None where the case
has none). A keras.layers.Layer subclass is constructed, built and given its weights as Keras's
RMSNormalization / LayerNormalization would be (norm_forms.keras_binder) and called ``layer(x,
training=False)``, or ``layer(x, scale, training=False)`` for a static scale; for that call
normcheck turns the layer's ``autocast`` off, since Keras would otherwise cast the float32 scale
to the layer's dtype (float16, bfloat16) before ``call`` sees it; x is in that dtype already.
Either returns ``(q, scale)``: q a ``float8_e4m3fn`` or ``float8_e5m2`` tensor
(``tf.dtypes.experimental``) of x's shape, or a float tensor whose values are FP8 values; scale
float32 of shape () for the tensor or one value per row, e.g. (rows, 1); with a static scale q
alone may be returned. The static scale is a float32 tensor of shape (). Inference only: no
gradient is taken.

TensorFlow's cast to float8 (checked in TF 2.21, eager and under XLA) rounds to nearest, ties to
even, float64 directly (not through float32), and does not saturate: beyond the format's largest
value it gives NaN (float8_e4m3fn) or inf (float8_e5m2), so a kernel clips first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from normcheck.frameworks.base import RunOutput
from normcheck.frameworks.quantized_result import ArrayKind, normalized_shape, quantized_arguments, quantized_outputs
from normcheck.frameworks.tensorflow.adapter import Binder, Bound, TensorFlowImplementation, add, keras, tensor, tf
from normcheck.frameworks.tensorflow.calls import watched
from normcheck.frameworks.tensorflow.norm_forms import (
    FunctionImplementation,
    KerasLayerImplementation,
    _label,
    _no_plain_forward,
    keras_binder,
)
from normcheck.ops.quantize import QUANTIZED
from normcheck.problem import Problem
from normcheck.user.binding import BoundFunction

RETURNS = "(q, scale): q the FP8 tensor, scale its float32 scale (q alone with a static scale)"
Call = Callable[[tf.Tensor], Any]  # x -> what the user's code returns


def static_scale(p: Problem) -> tf.Tensor | None:
    """The case's static scale as a float32 tensor of shape (), or None for a dynamic one."""
    if p.quant_scale is None:
        return None
    return tf.constant(np.float32(np.asarray(p.quant_scale)), dtype=tf.float32)


def _is_tensor(v: object) -> bool:
    return isinstance(v, tf.Tensor | tf.Variable)


def _describe(t: Any) -> str:
    return f"a {t.dtype.name} tensor of shape {tuple(t.shape)}"


ARRAYS = ArrayKind(_is_tensor, _describe, add, RETURNS)


def outputs(result: object, p: Problem) -> RunOutput:
    """The case's outputs from what the code returned (normcheck.frameworks.quantized_result)."""
    return quantized_outputs(result, p.quant_scale is not None, ARRAYS)


def quantized_bound(call: Call, p: Problem, weight: Any = None, bias: Any = None, layer: Any = None) -> Bound:
    """The Bound of a quantized case: ``call`` (what bench times) and its outputs' reader (what verify runs)."""
    return Bound(
        _no_plain_forward,
        weight,
        bias,
        layer=layer,
        quantized=lambda x: outputs(call(x), p),
        quantized_call=call,
    )


def function_binder(fn: Callable[..., Any], label: str) -> Binder:
    """Binds ``fn``, called as the module docstring says (refused where it creates variables)."""

    def bind(p: Problem, layout: str, device: str) -> Bound:
        w = None if p.weight is None else tf.Variable(tensor(p.weight, p.dtype))
        b = None if p.bias is None else tf.Variable(tensor(p.bias, p.dtype))
        scale, shape = static_scale(p), normalized_shape(p)

        def call(x: tf.Tensor) -> Any:
            return watched(label, fn, *quantized_arguments(p.op, x, shape, w, b, p.eps, scale))

        return quantized_bound(call, p, w, b)

    return bind


def layer_call(layer: keras.Layer, scale: tf.Tensor | None) -> Call:
    """x -> ``layer(x, training=False)``, or ``layer(x, scale, training=False)`` with the layer's
    autocast off for the call, so the float32 scale reaches ``call`` as float32."""
    if scale is None:
        return lambda x: layer(x, training=False)

    def call(x: tf.Tensor) -> Any:
        autocast = layer.autocast
        layer.autocast = False
        try:
            return layer(x, scale, training=False)
        finally:
            layer.autocast = autocast

    return call


def layer_binder(plain: Binder) -> Binder:
    """The Keras layer ``plain`` constructs, builds and gives the case's weights, called as ``layer_call`` says."""

    def bind(p: Problem, layout: str, device: str) -> Bound:
        bound = plain(p, layout, device)
        if bound.layer is None:  # keras_binder always keeps its layer
            raise RuntimeError("no Keras layer was bound")
        return quantized_bound(layer_call(bound.layer, static_scale(p)), p, bound.weight, bound.bias, bound.layer)

    return bind


def either(plain: Binder, quantized: Binder) -> Binder:
    """``quantized`` for a quantized case, ``plain`` for every other."""
    return lambda p, layout, device: (plain if p.params.quant is None else quantized)(p, layout, device)


class QuantizedFunction(FunctionImplementation):
    """A raw TensorFlow function bound by name (norm_forms.FunctionImplementation) that also takes the
    quantized cases, called by position as the module docstring says: on those the names it
    binds play no part."""

    def __init__(self, bound: BoundFunction, name: str) -> None:
        super().__init__(bound, name)
        self.extensions = self.extensions | {QUANTIZED}
        self.bind = either(self.bind, function_binder(bound.fn, bound.label))

    def unsupported(self, problem: Problem, layout: str) -> str | None:
        if problem.params.quant is not None:
            return None
        return super().unsupported(problem, layout)


class QuantizedOnlyFunction(TensorFlowImplementation):
    """A raw TensorFlow function its names cannot bind (a static scale named ``scale``, the name
    of a weight) that takes the quantized norm's arguments by position: run on quantized cases,
    a skip row saying so on the others."""

    extensions = frozenset({QUANTIZED})

    def __init__(self, op: str, fn: Callable[..., Any], name: str) -> None:
        self.label = _label(fn, name)
        super().__init__(op, name, function_binder(fn, self.label), running_stats=False)

    def unsupported(self, problem: Problem, layout: str) -> str | None:
        if problem.params.quant is not None:
            return None
        return (
            f"{self.label}'s parameter names do not bind a plain {self.op} norm (two name the weight, or one "
            "is missing): it is called by position as an FP8-output norm, on --quantize cases only"
        )


class QuantizedKerasLayer(KerasLayerImplementation):
    """A user's Keras layer of RMS or layer norm (norm_forms.keras_binder) that also takes the
    quantized cases, called as the module docstring says."""

    extensions = frozenset({QUANTIZED})

    def __init__(self, cls: type, op: str, name: str, omit_defaults: bool) -> None:
        plain = keras_binder(cls, op, omit_defaults)
        super().__init__(op, name, either(plain, layer_binder(plain)), running_stats=False)
