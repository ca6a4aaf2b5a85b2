"""TensorFlow reproducers: the Keras layer or the raw ``tf.nn`` graph run as the adapter runs it
(adapter.py's TensorFlowImplementation, and forms.py's keras_layer form), as text. Imports no
TensorFlow.

Channels-last cases move the channels last for the layer (axis=-1) and back for the comparison;
batch norm's training batches run first, then ``x`` forward under a GradientTape and its
gradients with ``dy`` as the output gradient.
"""

from __future__ import annotations

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
from normcheck.repro.call import ReproCall, Snippet, block, quoted

IMPORTS = (
    "import os",
    "",
    'os.environ["KERAS_BACKEND"] = "tensorflow"',
    'os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")',
    "",
    "import keras  # noqa: E402",
    "import tensorflow as tf  # noqa: E402",
)

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


def snippet(call: ReproCall) -> Snippet | str:
    """The script's TensorFlow part for ``call``, or why there is none."""
    if call.user is not None:
        if call.user.form != "keras_layer":
            return f"the tensorflow reproducers have no form {call.user.form!r}"
        setup, extra = _user_layer(call), FIND_VARIABLE
    elif call.impl == KERAS_NAMES.get(call.op) or (call.op, call.impl) in (
        ("bn", SYNCHRONIZED_NAME),
        ("rms", RMS_SCALING_NAME),
    ):
        setup, extra = _keras_layer(call), ""
    elif call.impl in (RAW_NAME, RAW_FLOAT32_NAME) and call.op in RAW_OPS:
        setup, extra = _raw(call, upcast=call.impl == RAW_FLOAT32_NAME), ""
    else:
        return f"TensorFlow has no implementation named {call.impl!r}"
    lines = [
        "with tf.device(DEVICE):",
        *(f"    {line}" if line else "" for line in setup + _body(call)),
        _outputs(call),
    ]
    code = _helpers(call) + extra + "\n\ndef run(data):\n" + block(lines)
    return Snippet(IMPORTS, code, 'f"tensorflow {tf.__version__}, keras {keras.__version__}"', ("tensorflow", "keras"))


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


def _device(device: str) -> str:
    return "/CPU:0" if device == "cpu" else f"/GPU:{device.partition(':')[2] or '0'}"


def _layout_shape(call: ReproCall) -> tuple[int, ...]:
    s = call.shape
    return (s[0], *s[2:], s[1]) if call.layout == CHANNELS_LAST else tuple(s)


def _trailing(ndim: int, k: int | None) -> list[int]:
    return list(range(ndim - (k or 0), ndim))


def _has_running(call: ReproCall) -> bool:
    """Whether the implementation keeps running statistics (the Keras batch norm layers do)."""
    return call.op == "bn" and not call.impl.startswith(RAW_NAME)


def _body(call: ReproCall) -> list[str]:
    """adapter TensorFlowImplementation._run: the training batches, x under a tape, the gradients."""
    lines = []
    if _has_running(call):
        lines += ['for batch in data["steps"]:', "    forward(tensor(batch, layout=True), True)"]
    leaves = [n for n in ("weight", "bias") if n in _leaves(call)]
    lines += [
        'x = tensor(data["x"], layout=True)',
        "with tf.GradientTape() as tape:",
        "    tape.watch(x)",
        f"    y = forward(x, {call.training})",
        f'grads = tape.gradient(y, [x, {", ".join(leaves)}], output_gradients=tensor(data["dy"], layout=True))'
        if leaves
        else 'grads = tape.gradient(y, [x], output_gradients=tensor(data["dy"], layout=True))',
    ]
    return lines


def _leaves(call: ReproCall) -> tuple[str, ...]:
    """The variables whose gradients are checked."""
    if not call.params.affine:
        return ()
    return ("weight",) if call.op == "rms" else ("weight", "bias")


def _outputs(call: ReproCall) -> str:
    items = ['"forward": numpy(y, layout=True)', '"grad_input": numpy(grads[0], layout=True)']
    for i, name in enumerate(_leaves(call), 1):
        items.append(f'"grad_{name}": numpy(grads[{i}])')
    if call.params.running_stats and _has_running(call):
        items += ['"running_mean": numpy(running_mean)', '"running_var": numpy(running_var)']
    return "return {" + ", ".join(items) + "}"


# -- Keras layers ------------------------------------------------------------------------------


def _keras_layer(call: ReproCall) -> list[str]:
    """adapter._keras_layer and bind_keras."""
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
    elif call.op == "ln":
        axes = _trailing(ndim, p.normalized_ndim)
        ctor = (
            f"keras.layers.LayerNormalization(axis={axes}, epsilon={call.eps!r}, center={affine}, "
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
    lines = [f"layer = {ctor}", f"layer.build({shape!r})"]
    if call.op == "rms":  # its scale (gamma) always exists: without an affine weight it stays at 1
        scale = 'data["weight"]' if affine else f"np.ones({shape[ndim - (p.normalized_ndim or 0) :]!r})"
        variable = "layer.gamma" if call.impl == RMS_SCALING_NAME else "layer.scale"
        lines.append(f"{variable}.assign(tensor({scale}))")
        lines += [f"weight = {variable}"] if affine else []
    elif affine:
        lines += [
            'layer.gamma.assign(tensor(data["weight"]))',
            'layer.beta.assign(tensor(data["bias"]))',
            "weight, bias = layer.gamma, layer.beta",
        ]
    if call.op == "bn":
        lines += [
            'layer.moving_mean.assign(tensor(data["running_mean"]))',
            'layer.moving_variance.assign(tensor(data["running_var"]))',
            "running_mean, running_var = layer.moving_mean, layer.moving_variance",
            "forward = lambda x, train: layer(x, training=train)",
        ]
    else:
        lines.append("forward = lambda x, train: layer(x)")
    return lines


def _user_layer(call: ReproCall) -> list[str]:
    """forms.constructor_args and keras_binder: the user's class constructed like the Keras layer
    for channels-last input, its variables set to the case's."""
    p, shape = call.params, _layout_shape(call)
    args: dict[str, Any] = {}
    if call.op in ("in", "gn"):
        args["groups"] = -1 if call.op == "in" else p.groups
    if call.op in CHANNEL_OPS:
        args["axis"] = -1
    else:
        k = p.normalized_ndim or 0
        args["axis"] = -1 if k == 1 else _trailing(len(shape), k)
    if call.op == "bn":
        args["momentum"] = call.framework_momentum
    args["epsilon"] = call.eps
    if call.op != "rms":
        args["center"] = args["scale"] = p.affine
    if call.user is not None and call.user.omit_defaults:
        defaults = KERAS_DEFAULTS[call.op]
        args = {a: v for a, v in args.items() if a not in OPTIONAL and v != defaults[a]}
    text = ", ".join([*(f"{a}={v!r}" for a, v in args.items()), f"dtype={call.dtype!r}"])
    lines = [f"layer = IMPL({text})", "if not layer.built:", f"    layer.build({shape!r})"]
    names = VARIABLE_NAMES
    if p.affine:
        lines.append(f'weight = set_variable(layer, {names["weight"]!r}, data["weight"])')
    elif call.op == "rms":
        k = p.normalized_ndim or 0
        lines.append(f"set_variable(layer, {names['weight']!r}, np.ones({shape[len(shape) - k :]!r}))")
    if p.affine and call.op != "rms":
        lines.append(f'bias = set_variable(layer, {names["bias"]!r}, data["bias"])')
    if call.op == "bn":
        lines += [
            f'running_mean = set_variable(layer, {names["running_mean"]!r}, data["running_mean"])',
            f'running_var = set_variable(layer, {names["running_var"]!r}, data["running_var"])',
        ]
    return [*lines, "forward = lambda x, train: layer(x, training=train)"]


# -- tf.nn.moments + tf.nn.batch_normalization --------------------------------------------------


def _raw_view(call: ReproCall) -> tuple[list[int], list[int], list[int]]:
    """adapter._raw_view: (view of x, axes of the statistics in it, shape of the affine parameters in it)."""
    shape = list(_layout_shape(call))
    ndim = len(shape)
    if call.op == "ln":
        k = call.params.normalized_ndim or 0
        return shape, _trailing(ndim, k), [1] * (ndim - k) + shape[ndim - k :]
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
    lines = []
    scale = offset = "None"
    if call.params.affine:
        lines += ['weight = tf.Variable(tensor(data["weight"]))', 'bias = tf.Variable(tensor(data["bias"]))']
        scale = f"tf.cast(tf.reshape(weight, {pview}), {compute})"
        offset = f"tf.cast(tf.reshape(bias, {pview}), {compute})"
    lines += [
        "",
        "def forward(x, train):",
        f"    xv = tf.cast(tf.reshape(x, {view}), {compute})",
        f"    mean, variance = tf.nn.moments(xv, {axes}, keepdims=True)",
        f"    y = tf.nn.batch_normalization(xv, mean, variance, {offset}, {scale}, {call.eps!r})",
        f"    return tf.cast(tf.reshape(y, {list(_layout_shape(call))}), DTYPE)",
        "",
    ]
    return lines
