"""TensorFlow reproducers: the code that runs one case as the adapter runs it (adapter.py's
TensorFlowImplementation, and for user code norm_forms.py, ws.py and quantized.py as forms.py
dispatches to them), as text. Imports no TensorFlow.

Channels-last cases move the channels last (axis=-1) and back for the comparison; batch norm's
training batches run first, then ``x`` forward under a GradientTape and its gradients with ``dy``
as the output gradient. Beyond the five ops (``COVERS``):

- the Keras layers' variants: ``LayerNormalization(center=False)`` (nobias) and ``axis=[...]``
  (``--axes``), the raw ``tf.nn`` graph over the same axes and without bias; user Keras layers
  constructed the same way, Gemma's stored weight set as is (0 where the case has none);
- a fused add + norm: ``layer(x, residual)`` or ``fn(x, residual, weight[, bias], eps)``, the
  gradients for dy and dresidual, the upstream gradients of both outputs;
- adaLN: ``layer(x, shift, scale)`` or ``fn(x, shift, scale, eps)`` bound by their parameters'
  names as normcheck binds them (normcheck.user.modulation, the torch reproducers' text), a
  layer's own (D,) gamma and beta given the stray values;
- Weight Standardization: ``fn(x, filters, bias, padding=, eps=)`` on NHWC x and HWIO filters,
  or a ``keras.layers.Conv2D`` subclass; ``ws_gn`` followed by normcheck's group norm;
- FP8-quantized output: ``fn(x, normalized_shape, weight[, bias], eps[, scale])`` or ``layer(x)``
  / ``layer(x, scale)`` with autocast off, read as normcheck reads it (judged by the script's
  FP8 rule, normcheck.repro.script).

A ``tf_function`` of the plain ops is bound by its parameters' names (normcheck.user.binding):
no reproducer writes that binding (``NAME_BOUND``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from normcheck.frameworks.tensorflow.facts import (
    CHANNEL_OPS,
    KERAS_DEFAULTS,
    KERAS_NAMES,
    RAW_FLOAT32_NAME,
    RAW_NAME,
    RAW_OPS,
    RMS_SCALING_NAME,
    SYNCHRONIZED_NAME,
    VARIABLE_NAMES,
)
from normcheck.frameworks.tensorflow.facts import KERAS_OPTIONAL as OPTIONAL
from normcheck.names import CHANNELS_LAST
from normcheck.ops import FUSED_BASE
from normcheck.ops.adaptive_layer_norm import ADALN
from normcheck.ops.fused_add import FUSED_ADD
from normcheck.ops.layer_norm import AXES, NOBIAS, normalized_axes
from normcheck.ops.quantize import QUANTIZED, QUANTIZED_CHECK, SCALE_CHECK, STATIC
from normcheck.ops.rms_norm import GEMMA
from normcheck.ops.weight_standardization import GN_EPS, PAPER, WEIGHT_STANDARDIZATION, WS_GN, WS_OPS, conv_of
from normcheck.repro.bindings import OPTIONS, modulation_text
from normcheck.repro.call import QUANTIZED_DTYPE, ReproCall, Snippet, block, quoted
from normcheck.user.modulation import MODULATION_ROLES
from normcheck.user.ws_forms import EPS_NAMES, PADDING_NAMES

# What these reproducers write beyond the five plain ops (repro.call.extensions)
COVERS = frozenset({GEMMA, NOBIAS, AXES, FUSED_ADD, ADALN, QUANTIZED, WEIGHT_STANDARDIZATION, PAPER})
# Why a tf_function of the plain ops has no reproducer
NAME_BOUND = (
    "the tensorflow reproducers do not write a tf_function of the plain norms: normcheck calls it by its "
    "parameters' names (normcheck.user.binding: roles, layouts, --param-shape, running statistics it may "
    "return), which a script would have to copy"
)
HWIO, OIHW = (2, 3, 1, 0), (3, 2, 0, 1)  # ws.py: the case's (O, I, kh, kw) weight as a kernel, and back

IMPORTS = (
    "import os",
    "",
    'os.environ["KERAS_BACKEND"] = "tensorflow"',
    'os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")',
    "",
    "import keras  # noqa: E402",
    "import tensorflow as tf  # noqa: E402",
)
INSPECT_IMPORT = "import inspect"

HELPERS = '''\
DTYPE = tf.{dtype}
DEVICE = {device}


def tensor(a, layout=False):
    """A copy of a float64 array in the case's dtype{layout_doc}."""
    a = np.asarray(a, dtype=np.float64)
    {move_in}return tf.cast(tf.constant(a), DTYPE)


def numpy(t, layout=False):
    """A tensor as float64 NumPy{layout_back_doc}."""
    a = tf.cast(t, tf.float64).numpy()
    return {move_out}
'''

FIND_VARIABLE = '''

def set_variable(layer, names, value):
    """Assign ``value`` to the layer's variable under the first of ``names`` (an attribute, else a
    weight's name), as normcheck sets a user's layer; None when it has none."""
    found = [getattr(layer, n, None) for n in names]
    v = next((v for v in found if v is not None and hasattr(v, "assign")), None)
    if v is None:
        by_name = {getattr(w, "name", None): w for w in layer.weights}
        v = next((by_name[n] for n in names if n in by_name), None)
    if v is not None:
        v.assign(tf.cast(tensor(value), v.dtype))
    return v
'''

# normcheck.frameworks.tensorflow.calls.eps_parameter
EPS_PARAMETER = '''

def eps_parameter(cls):
    """The parameter of ``cls``'s constructor that takes eps, named (``**kwargs`` takes none: a
    Keras layer passes those on to keras.layers.Layer, which refuses an eps)."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return next((n for n in {names!r} if n in params and params[n].kind in kinds), None)


def given_eps(cls, eps):
    """eps as ``cls``'s constructor takes it, by its name; nothing where it names none."""
    name = eps_parameter(cls)
    return {{}} if name is None else {{name: eps}}
'''

# normcheck.frameworks.tensorflow.ws.group_norm_after
GROUP_NORM = '''

def group_norm(y, groups, weight, bias):
    """ws_gn's group norm after the convolution, as normcheck computes it: PyTorch's
    F.group_norm(y, G, weight, bias, eps={eps!r}) on channels-last y, the statistics in float32 for
    half dtypes."""
    compute = tf.float32 if y.dtype in (tf.float16, tf.bfloat16) else y.dtype
    shape = tf.shape(y)
    c = y.shape[-1]
    g = tf.reshape(tf.cast(y, compute), tf.concat([shape[:-1], [groups, c // groups]], 0))
    mean, var = tf.nn.moments(g, axes=[1, 2, 4], keepdims=True)
    out = tf.reshape((g - mean) * tf.math.rsqrt(var + {eps!r}), shape)
    if weight is not None:
        out = out * tf.cast(weight, compute)
    if bias is not None:
        out = out + tf.cast(bias, compute)
    return tf.cast(out, y.dtype)
'''

# normcheck.frameworks.quantized_result.quantized_outputs with the TensorFlow adapter's add
QUANTIZED_OUTPUTS = '''

def quantized(result, static):
    """What FP8 code returned, as normcheck reads it: (q, scale), or q alone where the scale was
    given (``static``); q's values as float64 and the name of the dtype it came in, and the scale."""
    tensors = (tf.Tensor, tf.Variable)
    q, scale = (result, None) if static and isinstance(result, tensors) else result
    out = {{{q_key}: numpy(q), {dtype_key}: q.dtype.name}}
    if isinstance(scale, tensors):
        out[{scale_key}] = numpy(scale)
    elif scale is not None:
        out[{scale_key}] = np.asarray(float(scale))
    return out
'''


@dataclass(frozen=True)
class Leaf:
    """A variable whose gradient is a check, and how the script reads that gradient."""

    check: str
    name: str
    read: str = "numpy({})"


# (extra imports, helper texts, the lines of run(data) under tf.device)
Made = tuple[tuple[str, ...], tuple[str, ...], list[str]]


def snippet(call: ReproCall) -> Snippet | str:
    """The script's TensorFlow part for ``call``, or why there is none."""
    made = _made(call)
    if isinstance(made, str):
        return made
    imports, helpers, body = made
    if call.op in WS_OPS and call.device != "cpu":  # ws.py: float32 convolutions not in TF32
        body = ["tf.config.experimental.enable_tensor_float_32_execution(False)", *body]
    lines = ["with tf.device(DEVICE):", *(f"    {line}" if line else "" for line in body)]
    code = _helpers(call) + "".join(dict.fromkeys(helpers)) + "\n\ndef run(data):\n" + block(lines)
    version = 'f"tensorflow {tf.__version__}, keras {keras.__version__}"'
    return Snippet((*imports, *IMPORTS), code, version, ("tensorflow", "keras"))


def _made(call: ReproCall) -> Made | str:
    if call.user is None:
        return _built_in(call)
    if call.user.form == "keras_layer":
        return _keras_user(call)
    if call.user.form == "tf_function":
        return _function_user(call)
    return f"the tensorflow reproducers have no form {call.user.form!r}"


def _built_in(call: ReproCall) -> Made | str:
    """adapter.py's implementations: the Keras layers and the raw tf.nn graphs."""
    if call.impl == KERAS_NAMES.get(call.op) or (call.op, call.impl) in (
        ("bn", SYNCHRONIZED_NAME),
        ("rms", RMS_SCALING_NAME),
    ):
        return (), (), _keras_layer(call) + _plain_body(call)
    if call.impl in (RAW_NAME, RAW_FLOAT32_NAME) and call.op in RAW_OPS:
        return (), (), _raw(call, upcast=call.impl == RAW_FLOAT32_NAME) + _plain_body(call)
    return f"TensorFlow has no implementation named {call.impl!r}"


def _keras_user(call: ReproCall) -> Made:
    """forms.build's keras_layer form: norm_forms.keras_binder and the layers built on it."""
    if call.op in WS_OPS:
        return (INSPECT_IMPORT,), _ws_helpers(call), _ws_layer(call) + _ws_body(call)
    if call.op == ADALN:
        return (INSPECT_IMPORT,), (EPS_PARAMETER_TEXT, _modulation()), _adaln_layer(call) + _plain_body(call)
    setup = _user_layer(call)
    if call.op in FUSED_BASE:  # norm_forms.keras_fused_binder
        return (), (FIND_VARIABLE,), [*setup, "fused = lambda x, residual: layer(x, residual)", *_fused_body(call)]
    if call.params.quant is not None:  # quantized.layer_call
        if _static(call):
            call_lines = [
                "layer.autocast = False  # the float32 scale reaches call() as float32",
                "result = layer(x, scale, training=False)",
            ]
        else:
            call_lines = ["result = layer(x, training=False)"]
        return (), (FIND_VARIABLE, _quantized_outputs()), [*setup, *_quantized_body(call, call_lines)]
    return (), (FIND_VARIABLE,), [*setup, "forward = lambda x, train: layer(x, training=train)", *_plain_body(call)]


def _function_user(call: ReproCall) -> Made | str:
    """forms.build's tf_function form: the fixed calling conventions (norm_forms, ws, quantized)."""
    if call.op in WS_OPS:
        return (INSPECT_IMPORT,), (OPTIONS, *_ws_helpers(call)), _ws_function(call) + _ws_body(call)
    if call.op == ADALN:
        return (INSPECT_IMPORT,), (_modulation(),), _adaln_function(call) + _plain_body(call)
    if call.op in FUSED_BASE:
        fused = f"fused = lambda x, residual: {_fused_call(call)}"
        return (), (), [*_function_variables(call), fused, *_fused_body(call)]
    if call.params.quant is not None:
        lines = _function_variables(call) + _quantized_body(call, [f"result = {_quantized_call(call)}"])
        return (), (_quantized_outputs(),), lines
    return NAME_BOUND


def _helpers(call: ReproCall) -> str:
    last = call.layout == CHANNELS_LAST
    return HELPERS.format(
        dtype=call.dtype,
        device=quoted(_device(call.device)),
        layout_doc=", channels moved last when ``layout``" if last else "",
        layout_back_doc=", channels moved back to axis 1 when ``layout``" if last else "",
        move_in="if layout:\n        a = np.moveaxis(a, 1, -1)\n    " if last else "",
        move_out="np.moveaxis(a, -1, 1) if layout else a" if last else "a",
    )


EPS_PARAMETER_TEXT = EPS_PARAMETER.format(names=MODULATION_ROLES["eps"])


def _modulation() -> str:
    """normcheck.user.modulation.bind_modulation as the torch reproducers write it."""
    return modulation_text()


def _quantized_outputs() -> str:
    return QUANTIZED_OUTPUTS.format(
        q_key=quoted(QUANTIZED_CHECK), dtype_key=quoted(QUANTIZED_DTYPE), scale_key=quoted(SCALE_CHECK)
    )


def _device(device: str) -> str:
    return "/CPU:0" if device == "cpu" else f"/GPU:{device.partition(':')[2] or '0'}"


def _layout_shape(call: ReproCall) -> tuple[int, ...]:
    s = call.shape
    return (s[0], *s[2:], s[1]) if call.layout == CHANNELS_LAST else tuple(s)


def _trailing(ndim: int, k: int | None) -> list[int]:
    return list(range(ndim - (k or 0), ndim))


def _norm_op(call: ReproCall) -> str:
    """The norm of the case: a fused add + norm's own."""
    return FUSED_BASE.get(call.op, call.op)


def _has_running(call: ReproCall) -> bool:
    """Whether the implementation keeps running statistics (the Keras batch norm layers do)."""
    return call.op == "bn" and not call.impl.startswith(RAW_NAME)


def _static(call: ReproCall) -> bool:
    """Whether the FP8 case gives the code its scale."""
    return call.params.quant is not None and call.params.quant.scale == STATIC


def _affine_leaves(call: ReproCall) -> list[Leaf]:
    """The case's weight and bias (adaLN's scale and shift), whose gradients are checks."""
    if call.op == ADALN:
        return [Leaf("grad_weight", "scale"), Leaf("grad_bias", "shift")]
    leaves = [Leaf("grad_weight", "weight")] if call.params.affine else []
    return leaves + ([Leaf("grad_bias", "bias")] if call.has_bias else [])


# -- running the case: adapter._run, run_fused, ws.WSImplementation._run, quantized outputs ------


def _tape(
    watch: dict[str, tuple[str, str]],
    line: str,
    outputs: dict[str, str],
    upstream: list[str],
    leaves: list[Leaf],
    extra: tuple[str, ...] = (),
) -> list[str]:
    """``line`` run under a GradientTape watching ``watch`` (name -> (its array, its gradient's
    check)), the ``outputs`` (check -> name) differentiated with the ``upstream`` arrays; what
    run() returns: the outputs, the gradients and the ``extra`` items."""
    lines = [f'{name} = tensor(data["{key}"], layout=True)' for name, (key, _) in watch.items()]
    lines += ["with tf.GradientTape() as tape:", *(f"    tape.watch({name})" for name in watch), f"    {line}"]
    given = [f'tensor(data["{key}"], layout=True)' for key in upstream]
    targets, dy = (outputs["forward"], given[0]) if len(given) == 1 else (_list(outputs.values()), _list(given))
    sources = _list([*watch, *(leaf.name for leaf in leaves)])
    lines.append(f"grads = tape.gradient({targets}, {sources}, output_gradients={dy})")
    items = [f'"{check}": numpy({name}, layout=True)' for check, name in outputs.items()]
    items += [f'"{check}": numpy(grads[{i}], layout=True)' for i, (_, check) in enumerate(watch.values())]
    items += [f'"{leaf.check}": {leaf.read.format(f"grads[{i}]")}' for i, leaf in enumerate(leaves, len(watch))]
    return [*lines, "return {" + ", ".join([*items, *extra]) + "}"]


def _list(names: Any) -> str:
    return f"[{', '.join(names)}]"


def _plain_body(call: ReproCall) -> list[str]:
    """adapter TensorFlowImplementation._run: the training batches, x under a tape, the gradients."""
    lines: list[str] = []
    extra: tuple[str, ...] = ()
    if _has_running(call):
        lines += ['for batch in data["steps"]:', "    forward(tensor(batch, layout=True), True)"]
        if call.params.running_stats:
            extra = ('"running_mean": numpy(running_mean)', '"running_var": numpy(running_var)')
    forward = f"y = forward(x, {call.training})"
    return lines + _tape({"x": ("x", "grad_input")}, forward, {"forward": "y"}, ["dy"], _affine_leaves(call), extra)


def _fused_body(call: ReproCall) -> list[str]:
    """adapter.run_fused: both outputs, differentiated with dy and dresidual."""
    watch = {"x": ("x", "grad_input"), "residual": ("residual", "grad_residual")}
    outputs = {"forward": "y", "residual_out": "h"}
    return _tape(watch, "y, h = fused(x, residual)", outputs, ["dy", "dresidual"], _affine_leaves(call))


def _ws_body(call: ReproCall) -> list[str]:
    """ws.WSImplementation._run: the convolution (and ws_gn's group norm), the kernel's gradient
    as the case's (O, I, kh, kw)."""
    leaves = [Leaf("grad_weight", "weight", f"numpy(tf.transpose({{}}, {OIHW}))")]
    leaves += [Leaf("grad_bias", "bias")] if call.has_bias else []
    expr = "forward(x, True)"
    if call.op == WS_GN:
        gw, gb = ("gn_weight", "gn_bias") if call.params.affine else ("None", "None")
        expr = f"group_norm({expr}, {call.params.groups}, {gw}, {gb})"
        leaves += [Leaf("grad_gn_weight", "gn_weight"), Leaf("grad_gn_bias", "gn_bias")] if call.params.affine else []
    return _tape({"x": ("x", "grad_input")}, f"y = {expr}", {"forward": "y"}, ["dy"], leaves)


def _quantized_body(call: ReproCall, call_lines: list[str]) -> list[str]:
    """quantized.py: inference on x, what the code returned read as quantized_result reads it."""
    lines = []
    if _static(call):  # quantized.static_scale
        lines.append('scale = tf.constant(np.float32(data["quant_scale"]), dtype=tf.float32)')
    return [*lines, 'x = tensor(data["x"], layout=True)', *call_lines, f"return quantized(result, {_static(call)})"]


# -- Keras layers ------------------------------------------------------------------------------


def _keras_layer(call: ReproCall) -> list[str]:
    """adapter._keras_layer and bind_keras (and bind_keras_rms_scaling)."""
    p, shape = call.params, _layout_shape(call)
    ndim, affine = len(shape), p.affine
    axis = -1 if call.layout == CHANNELS_LAST else 1
    dtype = repr(call.dtype)
    if call.op == "bn":
        synchronized = ", synchronized=True" if call.impl == SYNCHRONIZED_NAME else ""
        ctor = (
            f"keras.layers.BatchNormalization(axis={axis}, momentum={call.framework_momentum!r}, "
            f"epsilon={call.eps!r}, center={affine}, scale={affine}, dtype={dtype}{synchronized})"
        )
    elif call.op in ("in", "gn"):
        groups = -1 if call.op == "in" else p.groups
        ctor = (
            f"keras.layers.GroupNormalization(groups={groups}, axis={axis}, epsilon={call.eps!r}, "
            f"center={affine}, scale={affine}, dtype={dtype})"
        )
    elif call.op == "ln":  # any axes; center=False: without bias
        axes = list(normalized_axes(call.shape, p))
        ctor = (
            f"keras.layers.LayerNormalization(axis={axes}, epsilon={call.eps!r}, center={call.has_bias}, "
            f"scale={affine}, dtype={dtype})"
        )
    elif call.impl == RMS_SCALING_NAME:
        axes = _trailing(ndim, p.normalized_ndim)
        ctor = (
            f"keras.layers.LayerNormalization(axis={axes}, epsilon={call.eps!r}, rms_scaling=True, center=False, "
            f"scale=True, dtype={dtype})"
        )
    else:
        axes = _trailing(ndim, p.normalized_ndim)
        ctor = f"keras.layers.RMSNormalization(axis={axes}, epsilon={call.eps!r}, dtype={dtype})"
    return [f"layer = {ctor}", f"layer.build({shape!r})", *_keras_variables(call)]


def _keras_variables(call: ReproCall) -> list[str]:
    """bind_keras: the layer's variables set to the case's, and its forward."""
    p, shape = call.params, _layout_shape(call)
    lines = []
    if call.op == "rms":  # its scale (gamma) always exists: without an affine weight it stays at 1
        scale = 'data["weight"]' if p.affine else f"np.ones({shape[len(shape) - (p.normalized_ndim or 0) :]!r})"
        variable = "layer.gamma" if call.impl == RMS_SCALING_NAME else "layer.scale"
        lines += [f"{variable}.assign(tensor({scale}))", *([f"weight = {variable}"] if p.affine else [])]
    else:
        lines += ['layer.gamma.assign(tensor(data["weight"]))', "weight = layer.gamma"] if p.affine else []
        lines += ['layer.beta.assign(tensor(data["bias"]))', "bias = layer.beta"] if call.has_bias else []
    if call.op != "bn":
        return [*lines, "forward = lambda x, train: layer(x)"]
    return [
        *lines,
        'layer.moving_mean.assign(tensor(data["running_mean"]))',
        'layer.moving_variance.assign(tensor(data["running_var"]))',
        "running_mean, running_var = layer.moving_mean, layer.moving_variance",
        "forward = lambda x, train: layer(x, training=train)",
    ]


def _constructor_args(call: ReproCall) -> dict[str, Any]:
    """norm_forms.constructor_args: the Keras layer's keyword arguments for the case (dtype aside)."""
    p, op, ndim = call.params, _norm_op(call), len(call.shape)
    args: dict[str, Any] = {}
    if op in ("in", "gn"):
        args["groups"] = -1 if op == "in" else p.groups
    if op in CHANNEL_OPS:
        args["axis"] = -1
    elif p.axes is not None:  # --axes: axis=[...]
        args["axis"] = list(p.axes)
    else:
        k = p.normalized_ndim or 0
        args["axis"] = -1 if k == 1 else _trailing(ndim, k)
    if op == "bn":
        args["momentum"] = call.framework_momentum
    args["epsilon"] = call.eps
    if op != "rms":
        args["center"] = p.affine and p.variant != NOBIAS  # center=False: layer norm without bias
        args["scale"] = p.affine
    if call.user is not None and call.user.omit_defaults:
        defaults = KERAS_DEFAULTS[op]
        args = {a: v for a, v in args.items() if a not in OPTIONAL and v != defaults[a]}
    return args


def _user_layer(call: ReproCall) -> list[str]:
    """norm_forms.keras_binder: the user's class constructed like the Keras layer for channels-last
    input, its variables set to the case's (an RMS norm's scale without weight to 1, Gemma's to 0)."""
    p, shape, names = call.params, _layout_shape(call), VARIABLE_NAMES
    text = ", ".join([*(f"{a}={v!r}" for a, v in _constructor_args(call).items()), f"dtype={call.dtype!r}"])
    lines = [f"layer = IMPL({text})", "if not layer.built:", f"    layer.build({shape!r})"]
    if p.affine:
        lines.append(f'weight = set_variable(layer, {names["weight"]!r}, data["weight"])')
    elif _norm_op(call) == "rms":
        unit = "zeros" if p.variant == GEMMA else "ones"
        size = shape[len(shape) - (p.normalized_ndim or 0) :]
        lines.append(f"set_variable(layer, {names['weight']!r}, np.{unit}({size!r}))")
    if call.has_bias:
        lines.append(f'bias = set_variable(layer, {names["bias"]!r}, data["bias"])')
    if call.op == "bn":
        lines += [
            f'running_mean = set_variable(layer, {names["running_mean"]!r}, data["running_mean"])',
            f'running_var = set_variable(layer, {names["running_var"]!r}, data["running_var"])',
        ]
    return lines


def _adaln_layer(call: ReproCall) -> list[str]:
    """norm_forms.keras_modulation_binder: ``cls(epsilon=...)`` (eps by the name its constructor
    takes, left out in the defaults call style), its own (D,) gamma/weight and beta/bias given the
    stray values, called ``layer(x, shift, scale)`` bound by its call's names."""
    width = call.shape[-1]
    return [
        f"layer = IMPL({_given_eps(call)}dtype={call.dtype!r})",
        "if not layer.built:",
        f"    layer.build({call.shape!r})",
        'stray = {"weight": data["stray_weight"], "bias": data["stray_bias"]}',
        "for v in layer.weights:  # a (D,) gamma and beta of its own, which adaLN's norm has none of",
        '    name = str(getattr(v, "name", "")).rpartition("/")[2].partition(":")[0]',
        f"    kind = {_kind_of('name')}",
        f"    if kind is not None and tuple(v.shape) == ({width},):",
        "        v.assign(tf.cast(tensor(stray[kind]), v.dtype))",
        *_adaln_variables(),
        "forward = lambda x, train: modulate(layer, modulation(layer.call), x, shift, scale, None)",
    ]


def _given_eps(call: ReproCall) -> str:
    """The constructor's eps by the name it takes it (calls.eps_parameter); none in the defaults call style."""
    omit = call.user is not None and call.user.omit_defaults
    return "" if omit else f"**given_eps(IMPL, {call.eps!r}), "


def _kind_of(name: str) -> str:
    weights, biases = VARIABLE_NAMES["weight"], VARIABLE_NAMES["bias"]
    return f'"weight" if {name} in {weights!r} else "bias" if {name} in {biases!r} else None'


def _adaln_variables() -> list[str]:
    return [
        'scale = tf.Variable(tensor(data["weight"]))  # adaLN scale: the case weight',
        'shift = tf.Variable(tensor(data["bias"]))  # adaLN shift: the case bias',
    ]


# -- raw TensorFlow functions: the fixed calling conventions ------------------------------------


def _function_variables(call: ReproCall) -> list[str]:
    """The weight and bias as tf.Variables, those the case has."""
    lines = ['weight = tf.Variable(tensor(data["weight"]))'] if call.params.affine else []
    return lines + (['bias = tf.Variable(tensor(data["bias"]))'] if call.has_bias else [])


def _fused_call(call: ReproCall) -> str:
    """norm_forms.fused_call: all positional, eps always given; ones for a case without a weight."""
    w = "weight" if call.params.affine else f"tf.ones({call.param_shape!r}, dtype=x.dtype)"
    b = ["bias" if call.has_bias else "None"] if call.op == "add_ln" else []
    return f"IMPL({', '.join(['x', 'residual', w, *b, repr(call.eps)])})"


def _quantized_call(call: ReproCall) -> str:
    """quantized_result.quantized_arguments: x, normalized_shape, weight[, bias], eps[, scale], all positional."""
    w = "weight" if call.params.affine else "None"
    b = ["bias" if call.has_bias else "None"] if call.op == "ln" else []
    scale = ["scale"] if _static(call) else []
    return f"IMPL({', '.join(['x', repr(call.normalized_shape), w, *b, repr(call.eps), *scale])})"


def _adaln_function(call: ReproCall) -> list[str]:
    """norm_forms.ModulationFunction: bound by its names, always given eps where it takes one."""
    forward = f"forward = lambda x, train: modulate(IMPL, modulation(IMPL), x, shift, scale, {call.eps!r})"
    return [*_adaln_variables(), forward]


# -- Weight Standardization (ws.py) --------------------------------------------------------------


def _ws_helpers(call: ReproCall) -> tuple[str, ...]:
    return (EPS_PARAMETER_TEXT, *((GROUP_NORM.format(eps=GN_EPS),) if call.op == WS_GN else ()))


def _ws_variables(call: ReproCall) -> list[str]:
    """ws_gn's group norm affine as tf.Variables."""
    if call.op != WS_GN or not call.params.affine:
        return []
    return [f'{name} = tf.Variable(tensor(data["{name}"]))' for name in ("gn_weight", "gn_bias")]


def _kernel() -> str:
    return f'tf.constant(np.transpose(data["weight"], {HWIO}))'


def _ws_function(call: ReproCall) -> list[str]:
    """ws.WSFunction: ``fn(x, filters, bias, padding=, eps=)`` by the names it takes them, the
    kernel (kh, kw, I, O) and the bias as tf.Variables."""
    padding = conv_of(call.params)[2]
    given = [f"({PADDING_NAMES!r}, {padding})"]
    if call.user is not None and not call.user.omit_defaults:
        given.append(f"({EPS_NAMES!r}, {call.eps!r})")
    b = "bias" if call.has_bias else "None"
    lines = [f"weight = tf.Variable(tf.cast({_kernel()}, DTYPE))  # the kernel, (kh, kw, in, out)"]
    lines += ['bias = tf.Variable(tensor(data["bias"]))'] if call.has_bias else []
    forward = f"forward = lambda x, train: IMPL(x, weight, {b}, **options(IMPL, {', '.join(given)}))"
    return [*lines, *_ws_variables(call), forward]


def _ws_layer(call: ReproCall) -> list[str]:
    """ws.WSLayer: ``cls(filters=O, kernel_size=k, padding="valid"|"same", use_bias=..., eps=...)``,
    built, given the case's kernel and bias, then ``layer(x)``."""
    o, k, padding = conv_of(call.params)
    keras_padding = "valid" if padding == 0 else "same"  # ws.keras_padding (the others are skips)
    _, c, h, w = call.shape
    ctor = f"IMPL(filters={o}, kernel_size={k}, padding={keras_padding!r}, use_bias={call.has_bias}, {_given_eps(call)}"
    lines = [
        f"layer = {ctor}dtype={call.dtype!r})",
        "if not layer.built:",
        f"    layer.build((None, {h}, {w}, {c}))",
        f"layer.kernel.assign(tf.cast({_kernel()}, layer.kernel.dtype))",
        "weight = layer.kernel",
    ]
    if call.has_bias:
        lines += ['layer.bias.assign(tf.cast(tf.constant(data["bias"]), layer.bias.dtype))', "bias = layer.bias"]
    return [*lines, *_ws_variables(call), "forward = lambda x, train: layer(x, training=train)"]


# -- tf.nn.moments + tf.nn.batch_normalization --------------------------------------------------


def _raw_view(call: ReproCall) -> tuple[list[int], list[int], list[int]]:
    """adapter._raw_view: (view of x, axes of the statistics in it, shape of the affine parameters in it)."""
    shape = list(_layout_shape(call))
    ndim = len(shape)
    if call.op == "ln":
        axes = normalized_axes(call.shape, call.params)
        return shape, list(axes), [n if a in axes else 1 for a, n in enumerate(shape)]
    c_axis = ndim - 1 if call.layout == CHANNELS_LAST else 1
    c = shape[c_axis]
    if call.op == "gn":
        g = call.params.groups or 1
        view = [*shape[:c_axis], g, c // g, *shape[c_axis + 1 :]]
        pview = [1] * len(view)
        pview[c_axis : c_axis + 2] = [g, c // g]
        return view, [a for a in range(1, len(view)) if a != c_axis], pview
    pview = [1] * ndim
    pview[c_axis] = c
    first = 0 if call.op == "bn" else 1
    return shape, [a for a in range(first, ndim) if a != c_axis], pview


def _raw(call: ReproCall, upcast: bool) -> list[str]:
    """adapter.raw_binder: the raw ops in the input dtype, or with the input and parameters cast to
    float32 first and the result back (``upcast``)."""
    view, axes, pview = _raw_view(call)
    compute = "tf.float64" if call.dtype == "float64" else "tf.float32" if upcast else "DTYPE"
    scale = f"tf.cast(tf.reshape(weight, {pview}), {compute})" if call.params.affine else "None"
    offset = f"tf.cast(tf.reshape(bias, {pview}), {compute})" if call.has_bias else "None"
    return [
        *_function_variables(call),
        "",
        "def forward(x, train):",
        f"    xv = tf.cast(tf.reshape(x, {view}), {compute})",
        f"    mean, variance = tf.nn.moments(xv, {axes}, keepdims=True)",
        f"    y = tf.nn.batch_normalization(xv, mean, variance, {offset}, {scale}, {call.eps!r})",
        f"    return tf.cast(tf.reshape(y, {list(_layout_shape(call))}), DTYPE)",
        "",
    ]
