"""Weight Standardization (``ws``, ``ws_gn``) written by the user in TensorFlow (``--impl``).

TensorFlow has none of its own. User code takes TensorFlow's convolution layout, channels last:
x (N, H, W, C) and the kernel (kh, kw, C, O), the layout of ``tf.nn.conv2d``'s filters and of a
Keras ``Conv2D``'s kernel (the case's (O, C, kh, kw) weight transposed). User code is
- a function (eager or tf.function) ``fn(x, filters, bias, padding=p, eps=...)``: the tensors
  positionally (``bias`` None when the case has none), ``padding`` (or ``pad``: the zero padding
  on each side of H and W) and ``eps`` (or ``epsilon``) by keyword when it takes them, as the
  PyTorch function form calls its function (normcheck.frameworks.torch.ws);
- a ``keras.layers.Conv2D`` subclass (one standardizing its kernel in ``convolution_op`` or
  ``call``), constructed as Conv2D is, ``cls(filters=O, kernel_size=k, padding="same"|"valid",
  use_bias=..., eps=...)`` (``eps`` only where its constructor names it), built, given the case's
  kernel and bias, then ``layer(x)``. Keras pads "valid" or "same" only: a case whose padding is
  neither is a skip row.
For ``ws_gn`` either is followed by normcheck's own group norm (PyTorch's ``F.group_norm`` with
the case's affine, on channels-last values), so the convolution is checked inside GN+WS.

Gradients by tf.GradientTape w.r.t. x, the kernel (the raw one, before standardization), the bias
and the group norm's affine. On a GPU, float32 convolutions run in float32: TensorFlow's default
rounds their operands to TF32, which normcheck does not hold float32 to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from normcheck.frameworks.base import RunOutput
from normcheck.frameworks.tensorflow.adapter import TF_DTYPES, Bound, TensorFlowImplementation, add, keras, tensor, tf
from normcheck.frameworks.tensorflow.calls import construct, eps_parameter, watched
from normcheck.names import CHANNELS_LAST, Layout
from normcheck.ops._op import required
from normcheck.ops.weight_standardization import GN_EPS, PAPER, WEIGHT_STANDARDIZATION, WS_GN, conv_of
from normcheck.problem import Problem
from normcheck.user.ws_forms import ws_keywords, ws_unsupported

# user code computes whatever convention it follows: the paper's variant runs it too
USER_EXTENSIONS = frozenset({WEIGHT_STANDARDIZATION, PAPER})
HWIO = (2, 3, 1, 0)  # (O, I, kh, kw) -> (kh, kw, I, O)
OIHW = (3, 2, 0, 1)  # and back
HALF = (tf.float16, tf.bfloat16)
# the case's arrays collecting a gradient besides x, by Problem attribute, and their checks
GN_LEAVES = (("gn_weight", "grad_gn_weight"), ("gn_bias", "grad_gn_bias"))


class WSImplementation(TensorFlowImplementation):
    """The user's ws code on channels-last values. ``conv(problem)`` binds its convolution to one
    case: the forward on channels-last x, with the kernel and bias variables it differentiates."""

    def __init__(self, op: str, name: str, obj: Any, omit_defaults: bool) -> None:
        super().__init__(op, name, lambda p, layout, device: self.ready(p, device)[0], running_stats=False)
        self.obj, self.omit_defaults = obj, omit_defaults
        self.owner = str(getattr(obj, "__name__", None) or name)
        self.extensions = USER_EXTENSIONS

    def layouts(self, shape: tuple[int, ...]) -> tuple[Layout, ...]:
        return (CHANNELS_LAST,)

    def conv(self, p: Problem) -> Bound:
        raise NotImplementedError

    def ready(self, p: Problem, device: str) -> tuple[Bound, dict[str, tf.Variable]]:
        """The case's forward (the convolution, then ws_gn's group norm) with the kernel and bias,
        and the group norm's affine variables by check name."""
        if device != "cpu":
            tf.config.experimental.enable_tensor_float_32_execution(False)
        conv = self.conv(p)
        norm, gn = group_norm_after(p)

        def forward(x: tf.Tensor, train: bool) -> tf.Tensor:
            return norm(_tensor(self.owner, conv.forward(x, train)))

        return Bound(forward, conv.weight, conv.bias), gn

    def _run(self, problem: Problem, layout: str, device: str) -> RunOutput:
        bound, gn = self.ready(problem, device)
        x = tensor(problem.x, problem.dtype, CHANNELS_LAST)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = bound.forward(x, True)
        leaves = {"grad_input": x, "grad_weight": bound.weight, "grad_bias": bound.bias, **gn}
        present = {check: v for check, v in leaves.items() if v is not None}
        dy = tensor(problem.dy, problem.dtype, CHANNELS_LAST)
        grads = tape.gradient(y, list(present.values()), output_gradients=dy)
        out = RunOutput()
        add(out, "forward", y, CHANNELS_LAST)
        for check, g in zip(present, grads, strict=True):
            if check == "grad_input":
                add(out, check, g, CHANNELS_LAST)
            elif check == "grad_weight" and g is not None:
                add(out, check, tf.transpose(g, OIHW))  # the kernel's gradient as the case's (O, I, kh, kw)
            else:
                add(out, check, g)
        return out


class WSFunction(WSImplementation):
    """``fn(x, filters, bias, padding=p, eps=e)`` (the module docstring)."""

    def unsupported(self, problem: Problem, layout: str) -> str | None:
        return ws_unsupported(self.obj, problem.params, self.omit_defaults)

    def conv(self, p: Problem) -> Bound:
        kernel, bias = _variables(p)
        kwargs = ws_keywords(self.obj, p.params, p.eps, self.omit_defaults)

        def forward(x: tf.Tensor, train: bool) -> Any:
            return watched(self.owner, self.obj, x, kernel, bias, **kwargs)

        return Bound(forward, kernel, bias)


class WSLayer(WSImplementation):
    """A ``keras.layers.Conv2D`` subclass (the module docstring)."""

    def __init__(self, op: str, name: str, obj: Any, omit_defaults: bool) -> None:
        super().__init__(op, name, obj, omit_defaults)
        self.eps_name = eps_parameter(obj)  # a named parameter: **kwargs go on to keras.layers.Layer

    def unsupported(self, problem: Problem, layout: str) -> str | None:
        _, k, padding = conv_of(problem.params)
        if keras_padding(k, padding) is None:
            return f"Keras pads 'valid' or 'same' only, not {padding} on each side of a {k}x{k} kernel"
        if not self.omit_defaults and self.eps_name is None:
            return f"{self.owner}(...) takes no eps: its own is checked by the defaults call style (against --eps)"
        return None

    def conv(self, p: Problem) -> Bound:
        o, k, padding = conv_of(p.params)
        args: dict[str, Any] = {"filters": o, "kernel_size": k, "padding": keras_padding(k, padding)}
        args["use_bias"] = p.bias is not None
        if self.eps_name is not None and not self.omit_defaults:
            args[self.eps_name] = p.eps
        layer = construct(self.obj, {**args, "dtype": p.dtype})
        if not layer.built:
            layer.build((None, *p.shape[2:], p.shape[1]))
        kernel = _set(layer, "kernel", np.transpose(_weight(p), HWIO), p.dtype)
        bias = None if p.bias is None else _set(layer, "bias", p.bias, p.dtype)
        if p.bias is None and getattr(layer, "bias", None) is not None:
            raise ValueError(f"{self.owner}(..., use_bias=False) still has a bias")
        return Bound(lambda x, train: layer(x, training=train), kernel, bias, layer=layer)


def keras_padding(kernel: int, padding: int) -> str | None:
    """Keras's name for zero padding of ``padding`` on each side at stride 1, None where it has none."""
    if padding == 0:
        return "valid"
    return "same" if kernel % 2 == 1 and padding == kernel // 2 else None


def _set(layer: keras.Layer, attr: str, value: np.ndarray, dtype: str) -> Any:
    v = getattr(layer, attr, None)
    if v is None or not hasattr(v, "assign"):
        raise AttributeError(f"{type(layer).__name__} has no {attr} after build(): subclass keras.layers.Conv2D")
    if tuple(v.shape) != value.shape:
        raise ValueError(f"{type(layer).__name__}.{attr} has shape {tuple(v.shape)}, expected {value.shape}")
    v.assign(tf.cast(tf.constant(value), v.dtype))
    return v


def _weight(p: Problem) -> np.ndarray:
    if p.weight is None:
        raise ValueError("a weight-standardization case has a weight")
    return p.weight


def _variables(p: Problem) -> tuple[tf.Variable, tf.Variable | None]:
    """The case's kernel (kh, kw, I, O) and bias as variables in its dtype."""
    kernel = tf.Variable(tf.cast(tf.constant(np.transpose(_weight(p), HWIO)), TF_DTYPES[p.dtype]))
    bias = None if p.bias is None else tf.Variable(tensor(p.bias, p.dtype))
    return kernel, bias


def _tensor(owner: str, out: Any) -> tf.Tensor:
    if not isinstance(out, tf.Tensor | tf.Variable):
        raise TypeError(f"{owner} returned a {type(out).__name__}; it must return the convolution's output tensor")
    return out


def group_norm_after(p: Problem) -> tuple[Callable[[tf.Tensor], tf.Tensor], dict[str, tf.Variable]]:
    """ws_gn's group norm after the convolution (the identity for ws), and its affine variables by
    check name: PyTorch's ``F.group_norm(y, G, weight, bias, eps=1e-5)`` on channels-last y, the
    statistics in float32 for half dtypes (PyTorch's CPU kernel's accumulate type)."""
    if p.op != WS_GN:
        return (lambda y: y), {}
    groups = required(p.params.groups, "groups")
    made = {
        name: tf.Variable(tensor(getattr(p, name), p.dtype)) for name, _ in GN_LEAVES if getattr(p, name) is not None
    }
    weight, bias = made.get("gn_weight"), made.get("gn_bias")

    def norm(y: tf.Tensor) -> tf.Tensor:
        compute = tf.float32 if y.dtype in HALF else y.dtype
        shape = tf.shape(y)
        c = y.shape[-1]
        g = tf.reshape(tf.cast(y, compute), tf.concat([shape[:-1], [groups, c // groups]], 0))
        mean, var = tf.nn.moments(g, axes=[1, 2, 4], keepdims=True)
        out = tf.reshape((g - mean) * tf.math.rsqrt(var + GN_EPS), shape)
        if weight is not None:
            out = out * tf.cast(weight, compute)
        if bias is not None:
            out = out + tf.cast(bias, compute)
        return tf.cast(out, y.dtype)

    return norm, {check: made[name] for name, check in GN_LEAVES if name in made}


def build(form: str, op: str, obj: object, name: str, omit_defaults: bool) -> TensorFlowImplementation:
    """The user's ws implementation in ``form`` (tf_function or keras_layer)."""
    if form == "keras_layer":
        if not isinstance(obj, type):
            raise TypeError(f"the keras_layer form takes a keras.layers.Conv2D subclass, not a {type(obj).__name__}")
        return WSLayer(op, name, obj, omit_defaults)
    if not callable(obj):
        raise TypeError(f"the tf_function form takes a function, not a {type(obj).__name__}")
    return WSFunction(op, name, obj, omit_defaults)


__all__ = ["USER_EXTENSIONS", "build", "keras_padding"]
