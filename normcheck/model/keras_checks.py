"""Per-layer checks of a Keras 3 model (TensorFlow backend): capture each norm layer's input by
wrapping the layer's ``call`` for one run of the model (functional, Sequential and subclassed
models alike, nested layers included; each activation written to its own .npy file and dropped),
then check each layer by calling the model's own layer object, ``layer(x, training=...)``, on the
captured activation and on the hostile input kinds, forward and backward (tf.GradientTape).
User layers that look like norms are probed first. Imports keras and tensorflow; the worker
imports this module only for Keras models.

Mode: the model is checked as it runs in inference. The capture pass calls it with
``training=False``, and every layer is checked with ``training=False``: a BatchNormalization
normalizes with its moving statistics. A BatchNormalization whose mode is chosen per call (not
``trainable=False``) is checked a second time with ``training=True``: batch statistics, and its
moving statistics after one update (Keras's momentum weighs the old value: normcheck's, the new
batch's, is 1 - momentum; the moving variance takes the biased batch variance), read after the
call and restored. A layer's variables are always restored after it runs.

Layouts: Keras normalizes channels last (BatchNormalization and GroupNormalization ``axis=-1``)
and LayerNormalization over any list of axes; each runner's permutation takes the layer's layout
to the reference's (channels at axis 1; the normalized axes last).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from normcheck.dtypes import EPS as DTYPE_EPS
from normcheck.dtypes import quantize
from normcheck.errors import UsageError
from normcheck.frameworks.base import RunOutput
from normcheck.frameworks.tensorflow.facts import RMS_SCALING_NAME, SYNCHRONIZED_NAME
from normcheck.model import checks
from normcheck.model.checks import LayerSetup
from normcheck.model.keras_layers import ROOT_PATH, _layers
from normcheck.model.records import PER_CALL, Inventory, NormLayer
from normcheck.names import OpName
from normcheck.ops import OpParams
from normcheck.problem import Problem
from normcheck.verify.records import CheckResult

FRAMEWORK = "tensorflow"  # the registry's name for Keras 3 on TensorFlow (keras_layers.FRAMEWORK)
TF_DTYPES = {"float64": tf.float64, "float32": tf.float32, "float16": tf.float16, "bfloat16": tf.bfloat16}
# a user layer's variables by role: the first of its own variables with one of these names wins
ROLE_NAMES = {
    "weight": ("gamma", "scale", "weight"),
    "bias": ("beta", "bias", "shift", "offset"),
    "running_mean": ("moving_mean", "running_mean"),
    "running_var": ("moving_variance", "moving_var", "running_var"),
}
GROUP_ATTRIBUTES = ("groups", "num_groups", "num_group", "G")
# eps values tried on a candidate that has no eps attribute (torch_checks.PROBE_EPS, and Keras's 1e-3)
PROBE_EPS = (1e-3, 1e-5, 1e-6, 1e-8, 1e-12, float(np.finfo(np.float32).eps), 1e-7)
TRAINING_LABEL = "training=True"


@dataclass(frozen=True)
class Captured:
    file: str
    dtype: str
    calls: int = 1


@dataclass(frozen=True)
class Roles:
    """The layer's variables holding each role (None: it has none)."""

    weight: Any = None
    bias: Any = None
    running_mean: Any = None
    running_var: Any = None


# ---- tensors ------------------------------------------------------------------------------------


def _dtype(t: Any) -> str:
    return str(keras.backend.standardize_dtype(t.dtype))


def _np(t: Any) -> np.ndarray:
    """A float64 copy of a tensor or variable."""
    value = t.value if isinstance(t, keras.Variable) else t
    return np.asarray(tf.cast(value, tf.float64).numpy())


def _tf(a: np.ndarray, dtype: str) -> tf.Tensor:
    """``a`` (float64, exact in ``dtype``) as a tensor of ``dtype``."""
    return tf.cast(tf.constant(np.asarray(a, dtype=np.float64)), TF_DTYPES[dtype])


def _inverse(permutation: tuple[int, ...] | None) -> tuple[int, ...] | None:
    return None if permutation is None else tuple(int(i) for i in np.argsort(permutation))


def _transpose(a: np.ndarray, permutation: tuple[int, ...] | None) -> np.ndarray:
    return a if permutation is None else np.transpose(a, permutation)


def _is_tensor(value: Any) -> bool:
    return isinstance(value, (tf.Tensor, tf.Variable)) and value.dtype.is_floating


@contextmanager
def raw_errors() -> Iterator[None]:
    """Keras's traceback filtering off: an exception raised in a layer's call keeps its own message
    ("RuntimeError: out of memory"), not Keras's wrapper ("Exception encountered when calling
    ..."), for the one line that names it. Restored afterwards."""
    enabled = keras.config.is_traceback_filtering_enabled()
    if enabled:
        keras.config.disable_traceback_filtering()
    try:
        yield
    finally:
        if enabled:
            keras.config.enable_traceback_filtering()


def _narrower(compute: str, dtype: str) -> bool:
    return compute in DTYPE_EPS and dtype in DTYPE_EPS and DTYPE_EPS[compute] > DTYPE_EPS[dtype]


# ---- the layers and their variables -------------------------------------------------------------


def layers_of(model: Any) -> dict[str, Any]:
    """Every layer of the model by its inventory path (ROOT_PATH: the model itself)."""
    return {path or ROOT_PATH: layer for path, layer in _layers(model)}


def layer_at(model: Any, path: str) -> Any:
    return layers_of(model).get(path)


def _short(variable: Any) -> str:
    return str(getattr(variable, "name", "")).rsplit("/", 1)[-1].split(":")[0]


def _own_variables(layer: Any) -> list[Any]:
    """The layer's own variables (not its sublayers'), else every variable it reaches."""
    own = [*getattr(layer, "_trainable_variables", []), *getattr(layer, "_non_trainable_variables", [])]
    return own or list(getattr(layer, "weights", []))


def _roles(layer: Any, builtin: bool) -> Roles:
    if builtin:  # Keras's own attributes (RMSNormalization's weight is ``scale``)
        weight = "scale" if isinstance(layer, keras.layers.RMSNormalization) else "gamma"
        found = {
            "weight": getattr(layer, weight, None),
            "bias": getattr(layer, "beta", None),
            "running_mean": getattr(layer, "moving_mean", None),
            "running_var": getattr(layer, "moving_variance", None),
        }
        return Roles(**{k: v if isinstance(v, keras.Variable) else None for k, v in found.items()})
    variables = _own_variables(layer)
    by_role: dict[str, Any] = {}
    for role, names in ROLE_NAMES.items():
        by_role[role] = next((v for name in names for v in variables if _short(v) == name), None)
    return Roles(**by_role)


def _applied(layer: Any, variable: Any) -> np.ndarray | None:
    """A variable's values as the layer's call sees them: an autocast variable (Keras's default for
    add_weight) is cast to the layer's compute dtype inside a mixed-precision call."""
    if variable is None:
        return None
    value = _np(variable)
    compute = str(getattr(layer, "compute_dtype", "") or "")
    if getattr(variable, "_autocast", False) and compute in TF_DTYPES and compute != _dtype(variable):
        value = quantize(value, compute)
    return value


def _snapshot(layers: list[Any]) -> list[tuple[Any, np.ndarray]]:
    """Every variable of the layers, with a copy: a call in training updates moving statistics."""
    out = []
    seen: set[int] = set()
    for layer in layers:
        for v in getattr(layer, "weights", []):
            if id(v) not in seen:
                seen.add(id(v))
                out.append((v, np.array(v.numpy())))
    return out


def _restore(saved: list[tuple[Any, np.ndarray]]) -> None:
    for variable, value in saved:
        variable.assign(value)


# ---- inputs and capture ---------------------------------------------------------------------------


def model_inputs(
    model: Any, shapes: tuple[tuple[int, ...], ...], arrays: list[np.ndarray] | None, seed: int
) -> list[tf.Tensor]:
    """The model's inputs: the arrays given, or seeded normal(0, 1) values of each shape in the
    dtype of the model's matching Input (a functional model), else Keras's floatx (float32)."""
    if arrays is not None:
        return [tf.convert_to_tensor(np.ascontiguousarray(a)) for a in arrays]
    declared: list[str] = []
    try:
        declared = [str(keras.backend.standardize_dtype(t.dtype)) for t in (getattr(model, "inputs", None) or [])]
    except Exception:
        declared = []
    rng = np.random.default_rng(seed)
    out = []
    for k, shape in enumerate(shapes):
        dtype = declared[k] if k < len(declared) and declared[k] in TF_DTYPES else keras.config.floatx()
        out.append(_tf(quantize(rng.standard_normal(shape), dtype), dtype))
    return out


def _first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if args:
        return args[0]
    for name in ("inputs", "x", "input", "hidden_states"):
        if name in kwargs:
            return kwargs[name]
    return next((v for v in kwargs.values() if _is_tensor(v)), None)


def _describe_inputs(inputs: list[tf.Tensor]) -> str:
    return ", ".join("x".join(str(int(n)) for n in t.shape) + f" {_dtype(t)}" for t in inputs)


def capture(model: Any, layers: dict[str, Any], inputs: list[tf.Tensor], folder: str) -> dict[str, Captured]:
    """Run the model once in inference (``training=False``), each norm layer's ``call`` wrapped so
    that its first input goes to its own .npy file in ``folder`` (bfloat16 saved as float32, which
    holds it exactly). Every wrapper and every variable of the layers is restored afterwards.
    UsageError when the model raises."""
    found: dict[str, Captured] = {}
    last: list[str] = []  # the last norm layer reached, for the error line
    wrapped: list[tuple[Any, bool, Any]] = []  # (layer, had its own call attribute, that attribute)

    def wrapper(path: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def capturing(*args: Any, **kwargs: Any) -> Any:
            last[:] = [path]
            if path in found:
                found[path] = replace(found[path], calls=found[path].calls + 1)
            else:
                x = _first_tensor(args, kwargs)
                if _is_tensor(x) and tf.executing_eagerly():
                    file = os.path.join(folder, f"{len(found)}.npy")
                    dtype = _dtype(x)
                    value = tf.cast(x, tf.float32) if dtype == "bfloat16" else x
                    np.save(file, np.asarray(value.numpy()))
                    found[path] = Captured(file, dtype)
            return call(*args, **kwargs)

        return capturing

    saved = _snapshot(list(layers.values()))
    try:
        for path, layer in layers.items():
            own = "call" in vars(layer)
            wrapped.append((layer, own, vars(layer).get("call")))
            layer.call = wrapper(path, layer.call)
        with raw_errors():
            model(inputs[0] if len(inputs) == 1 else list(inputs), training=False)
    except UsageError:
        raise
    except BaseException as e:
        raise checks.model_raised(e, last, _describe_inputs(inputs)) from None
    finally:
        for layer, own, call in wrapped:
            if own:
                layer.call = call
            else:
                del layer.call
        _restore(saved)
    return found


# ---- a layer's setup ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How to run a layer: its setup, its variables, the mode of its call, its layout."""

    setup: LayerSetup
    roles: Roles
    training: bool
    permutation: tuple[int, ...] | None


def _check_dtype(layer: Any, dtype: str) -> tuple[str, str | None]:
    """The dtype a layer is checked in: its activation's, or its compute dtype where that is
    narrower (a LayerNormalization under mixed_float16 takes float32 in and returns float16)."""
    compute = str(getattr(layer, "compute_dtype", "") or "")
    if _narrower(compute, dtype):
        return compute, f"its input arrives as {dtype}, it returns {compute} (its compute dtype): checked in {compute}"
    return dtype, None


def _ln_permutation(axes: list[int], ndim: int) -> tuple[int, ...] | None:
    normalized = sorted(a % ndim for a in axes)
    perm = (*(a for a in range(ndim) if a not in normalized), *normalized)
    return None if perm == tuple(range(ndim)) else perm


def builtin_plan(layer: Any, record: NormLayer, ndim: int, dtype: str, training: bool) -> Plan | str:
    """A built-in layer's plan, read from the layer itself; a string saying why there is none."""
    d = checks.dtype_name(dtype)
    if d is None or record.op is None:
        return f"activation dtype {dtype} is not one normcheck checks"
    roles = _roles(layer, builtin=True)
    w, b = _applied(layer, roles.weight), _applied(layer, roles.bias)
    affine = w is not None or b is not None
    eps = getattr(layer, "epsilon", None)
    eps = float(keras.config.epsilon()) if eps is None else float(eps)
    known = record.kind
    op: OpName = record.op
    if isinstance(layer, keras.layers.BatchNormalization):
        if getattr(layer, "synchronized", False):  # its documented one-pass variance (tensorflow facts)
            known = SYNCHRONIZED_NAME
        frozen = not bool(layer.trainable)
        if training and getattr(layer, "renorm", False):
            return "renorm=True: batch renormalization in training has no normcheck reference"
        batch_stats = training and not frozen
        params = OpParams(mode="train" if batch_stats else "eval", running_stats=True, affine=affine)
        setup = LayerSetup(
            "bn",
            params,
            eps,
            d,
            1.0 - float(layer.momentum),  # Keras's momentum weighs the old value
            w,
            b,
            _applied(layer, roles.running_mean),
            _applied(layer, roles.running_var),
            False,  # the moving variance takes the biased batch variance
            known_impl=known,
        )
        return Plan(setup, roles, training, checks.channels_last_permutation(ndim, int(layer.axis)))
    if isinstance(layer, keras.layers.GroupNormalization):
        axis = int(layer.axis)
        # groups=-1 (a group per channel) is instance norm: the record's op says which
        params = OpParams(affine=affine) if op == "in" else OpParams(groups=int(layer.groups), affine=affine)
        setup = LayerSetup(op, params, eps, d, 0.1, w, b, known_impl=known)
        return Plan(setup, roles, training, checks.channels_last_permutation(ndim, axis))
    if isinstance(layer, keras.layers.LayerNormalization):
        axes = list(layer.axis) if isinstance(layer.axis, (list, tuple)) else [int(layer.axis)]
        if sorted(axes) != sorted(axes, key=lambda a: a % ndim):
            return f"axis={axes} mixes negative and positive axes: Keras then orders its weights otherwise"
        if getattr(layer, "rms_scaling", False):  # checked as the RMS norm it claims: a known defect
            params = OpParams(normalized_ndim=len(axes), affine=w is not None)
            setup = LayerSetup("rms", params, eps, d, 0.1, w, None, known_impl=RMS_SCALING_NAME)
            return Plan(setup, roles, training, _ln_permutation(axes, ndim))
        setup = LayerSetup(
            "ln", OpParams(normalized_ndim=len(axes), affine=affine), eps, d, 0.1, w, b, known_impl=known
        )
        return Plan(setup, roles, training, _ln_permutation(axes, ndim))
    if isinstance(layer, keras.layers.RMSNormalization):
        axes = list(layer.axis) if isinstance(layer.axis, (list, tuple)) else [int(layer.axis)]
        if sorted(axes) != sorted(axes, key=lambda a: a % ndim):
            return f"axis={axes} mixes negative and positive axes: Keras then orders its weights otherwise"
        params = OpParams(normalized_ndim=len(axes), affine=True)
        setup = LayerSetup("rms", params, eps, d, 0.1, w, None, known_impl=known)
        return Plan(setup, roles, training, _ln_permutation(axes, ndim))
    return f"{type(layer).__name__} is not a Keras norm layer normcheck runs"


# ---- candidates: what a user layer computes, probed --------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One reading of what a candidate computes, tried by the probe."""

    op: OpName
    eps: float
    params: OpParams
    one_plus: bool  # the weight applied as 1 + w (Gemma)
    label: str
    permutation: tuple[int, ...] | None = None  # the layer's layout to the reference's


def _variants(layer: Any, record: NormLayer, roles: Roles, shape: tuple[int, ...]) -> Iterator[Variant]:
    ndim = len(shape)
    ops: list[OpName] = [record.op] if record.op else ["rms", "ln"]
    eps_values = [float(record.eps)] if isinstance(record.eps, (int, float)) else list(PROBE_EPS)
    weight = roles.weight
    wshape = tuple(int(n) for n in weight.shape) if weight is not None else None
    has_weight = weight is not None
    plus = (False, True) if has_weight else (False,)
    for op in ops:
        layouts: list[tuple[OpParams, tuple[int, ...] | None, str]] = []
        if op in ("ln", "rms"):
            ks = [len(record.feature_shape)] if record.feature_shape else []
            if wshape is not None:
                ks.append(len(wshape))
            ks.append(1)
            for k in dict.fromkeys(ks):
                if 0 < k <= ndim:
                    layouts.append((OpParams(normalized_ndim=k, affine=has_weight), None, ""))
        else:
            axes = [-1, 1] if ndim >= 3 else [-1]
            for axis in axes:
                c = shape[axis]
                if wshape is not None and int(np.prod(wshape)) != c:
                    continue
                where = "" if axis == -1 else " (channels at axis 1)"
                perm = checks.channels_last_permutation(ndim, axis)
                if op == "gn":
                    groups = next(
                        (getattr(layer, a) for a in GROUP_ATTRIBUTES if isinstance(getattr(layer, a, None), int)),
                        record.groups,
                    )
                    if not isinstance(groups, int) or groups <= 0 or c % groups:
                        continue
                    layouts.append((OpParams(groups=groups, affine=has_weight), perm, where))
                elif op == "bn":
                    running = roles.running_mean is not None and roles.running_var is not None
                    mode = "eval" if running else "train"
                    layouts.append((OpParams(mode=mode, running_stats=running, affine=has_weight), perm, where))
                else:
                    layouts.append((OpParams(affine=has_weight), perm, where))
        for params, perm, where in layouts:
            for eps in eps_values:
                for one_plus in plus:
                    label = f"{op}{where}, eps {eps:g}" + (", weight applied as 1 + w" if one_plus else "")
                    yield Variant(op, eps, params, one_plus, label, perm)


def _variant_setup(layer: Any, roles: Roles, v: Variant, shape: tuple[int, ...], dtype: str) -> LayerSetup | None:
    d = checks.dtype_name(dtype)
    if d is None:
        return None
    w, b = _applied(layer, roles.weight), _applied(layer, roles.bias)
    if v.op == "rms" and b is not None:
        return None
    if w is not None and v.one_plus:
        w = w + 1.0
    if v.op in ("ln", "rms"):
        k = v.params.normalized_ndim or 1
        want = tuple(shape[len(shape) - k :])
        for a in (w, b):
            if a is not None and a.size != int(np.prod(want)):
                return None
        w = None if w is None else w.reshape(want)
        b = None if b is None else b.reshape(want)
    else:
        w = None if w is None else w.reshape(-1)
        b = None if b is None else b.reshape(-1)
    rm = rv = None
    if v.params.running_stats:
        rm, rv = _applied(layer, roles.running_mean), _applied(layer, roles.running_var)
        rm = None if rm is None else rm.reshape(-1)
        rv = None if rv is None else rv.reshape(-1)
    return LayerSetup(v.op, v.params, v.eps, d, 0.1, w, b, rm, rv, False)


def _forward(layer: Any, x: np.ndarray, dtype: str) -> np.ndarray | None:
    saved = _snapshot([layer])
    try:
        with raw_errors():
            y = layer(_tf(x, dtype), training=False)
    finally:
        _restore(saved)
    return _np(y) if _is_tensor(y) else None


def probe(layer: Any, record: NormLayer, x: np.ndarray, dtype: str) -> tuple[Plan, str] | str:
    """What a candidate computes, tried on its captured activation ``x`` (in its own layout): the
    reference of the op its name suggests (or of RMS and layer norm), over its trailing axes or
    its channels (last, else axis 1), with its eps (or, without an eps attribute, each of
    PROBE_EPS, then confirmed on an input whose spread is near sqrt(eps)), its weight as w or as
    1 + w. (plan, what matched), or why none did."""
    roles = _roles(layer, builtin=False)
    try:
        y = _forward(layer, x, dtype)
    except Exception as e:
        return f"unconfirmed: the layer raised {checks.describe_error(e)} on its own input"
    if y is None:
        return "unconfirmed: the layer does not return a tensor"
    shape = tuple(int(n) for n in x.shape)
    searched = not isinstance(record.eps, (int, float))
    for v in _variants(layer, record, roles, shape):
        setup = _variant_setup(layer, roles, v, shape, dtype)
        if setup is None or not checks.forward_matches(
            setup, _transpose(x, v.permutation), _transpose(y, v.permutation)
        ):
            continue
        if searched:  # the eps found only where it shows: data of spread sqrt(eps)
            rng = np.random.default_rng(0)
            small = quantize(math.sqrt(v.eps) * rng.standard_normal(shape), setup.dtype)
            try:
                ys = _forward(layer, small, dtype)
            except Exception:
                continue
            if ys is None or not checks.forward_matches(
                setup, _transpose(small, v.permutation), _transpose(ys, v.permutation)
            ):
                continue
        return Plan(setup, roles, False, v.permutation), v.label
    if not searched:
        explained = _explained(layer, record, roles, x, dtype)
        if explained is not None:
            return explained
    return "unconfirmed: behaves like no normalization normcheck knows (probed on its captured input)"


def _explained(layer: Any, record: NormLayer, roles: Roles, x: np.ndarray, dtype: str) -> tuple[Plan, str] | None:
    """A candidate that matches no op exactly but one op with one known mistake: checked on its
    captured input, every failing check of the case is reproduced by the same mistake (diagnosis
    with evidence, not ambiguous). Then it is that op, and its checks fail with that cause;
    anything less leaves it unconfirmed (torch_checks._explained, for Keras layers)."""
    shape = tuple(int(n) for n in x.shape)
    for v in _variants(layer, record, roles, shape):
        setup = _variant_setup(layer, roles, v, shape, dtype)
        if setup is None:
            continue
        plan = Plan(setup, roles, False, v.permutation)
        cause = checks.one_mistake(FRAMEWORK, setup, _transpose(x, v.permutation), partial(run_layer, layer, plan))
        if cause is not None:
            return plan, f"{v.label}, but for one known mistake: {cause}"
    return None


# ---- running a layer ----------------------------------------------------------------------------


def run_layer(layer: Any, plan: Plan, problem: Problem) -> RunOutput:
    """The layer itself on the problem (held in the reference's layout): ``layer(x, training=...)``
    in its own layout, forward, backward with dy (tf.GradientTape, its weight and bias watched),
    and its moving statistics after the call where it keeps them. Its variables are restored."""
    inverse = _inverse(plan.permutation)
    x = _tf(_transpose(np.asarray(problem.x), inverse), problem.dtype)
    watched = [
        (check, v) for check, v in (("grad_weight", plan.roles.weight), ("grad_bias", plan.roles.bias)) if v is not None
    ]
    sources = [v.value for _, v in watched]
    saved = _snapshot([layer])
    try:
        with tf.GradientTape() as tape, raw_errors():
            tape.watch(x)
            for s in sources:
                tape.watch(s)
            y = layer(x, training=plan.training)
        if not _is_tensor(y):
            raise TypeError(f"the layer returned {type(y).__name__}, not a tensor")
        dy = tf.cast(_tf(_transpose(np.asarray(problem.dy), inverse), problem.dtype), y.dtype)
        grads = tape.gradient(y, [x, *sources], output_gradients=dy)
        out = RunOutput()
        out.add("forward", _transpose(_np(y), plan.permutation), _dtype(y))
        if grads[0] is not None:
            out.add("grad_input", _transpose(_np(grads[0]), plan.permutation), _dtype(grads[0]))
        for (check, _), g in zip(watched, grads[1:], strict=True):
            if g is not None:
                out.add(check, _np(g), _dtype(g))
        if problem.params.running_stats:
            for role in ("running_mean", "running_var"):
                v = getattr(plan.roles, role)
                if v is not None:
                    out.add(role, _np(v).reshape(-1), _dtype(v))
        return out
    finally:
        _restore(saved)


def _tensorflow_backend() -> str | None:
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return None
    return f"per-layer checks of Keras layers run on the TensorFlow backend, not {backend} (set KERAS_BACKEND)"


def runner_for(
    model: Any, layer: NormLayer, x: np.ndarray, dtype: str, *, training: bool = False
) -> checks.LayerRunner | str:
    """The model's layer at ``layer.path`` ready to run, given its input ``x`` (as the layer
    receives it, in its own layout; a candidate is probed on it), called with ``training`` (the
    default, False, is inference); why not, as a string."""
    wrong = _tensorflow_backend()
    if wrong is not None:
        return wrong
    obj = layer_at(model, layer.path)
    if obj is None:
        return "not a layer of the model"
    checked, note = _check_dtype(obj, dtype)
    if checked != dtype:
        x = quantize(x, checked)
    label = f"{layer.path} ({layer.kind}" + (f"; {TRAINING_LABEL}" if training else "")
    if layer.confirmed:
        found: Plan | str = builtin_plan(obj, layer, x.ndim, checked, training)
    else:
        if training:
            return "a user layer is checked as the model runs it in inference (training=False)"
        probed = probe(obj, layer, x, checked)
        if isinstance(probed, str):
            return probed
        found, how = probed
        label += f"; probed: {how}"
    if isinstance(found, str):
        return found
    plan = found
    if note is not None:
        label += f"; {note}"
        plan = replace(plan, setup=replace(plan.setup, notes=(*plan.setup.notes, note)))
    return checks.LayerRunner(
        plan.setup,
        lambda problem: run_layer(obj, plan, problem),
        label + ")",
        FRAMEWORK,
        permutation=plan.permutation,
    )


def checked_modes(layer: NormLayer) -> tuple[bool, ...]:
    """The ``training`` values a layer is checked with: inference always; a batch norm whose mode
    is chosen per call (not frozen) in training too."""
    if layer.confirmed and layer.op == "bn" and layer.mode == PER_CALL:
        return (False, True)
    return (False,)


def check_layer(
    model: Any, record: NormLayer, captured: Captured | None, kinds: tuple[str, ...], seed: int
) -> list[CheckResult]:
    label = f"{record.path} ({record.kind})"
    if captured is None:
        return [
            checks.layer_row(label, FRAMEWORK, "skip", "not called by the model on this input", record.op, record.dtype)
        ]
    x = np.load(captured.file).astype(np.float64)
    rows: list[CheckResult] = []
    for training in checked_modes(record):
        try:
            runner = runner_for(model, record, x, captured.dtype, training=training)
        except Exception as e:  # the user's layer raised while being read or probed
            runner = f"error: the layer raised {checks.describe_error(e)}"
        shown = label[:-1] + f"; {TRAINING_LABEL})" if training else label
        if isinstance(runner, str):
            status = "error" if runner.startswith("error: ") else "skip"
            rows.append(
                checks.layer_row(shown, FRAMEWORK, status, runner.removeprefix("error: "), record.op, captured.dtype)
            )
            continue
        rows.extend(runner.rows(x, kinds, seed, record.path, captured.calls))
    return rows


def check_keras(
    model: Any,
    inventory: Inventory,
    shapes: tuple[tuple[int, ...], ...],
    arrays: list[np.ndarray] | None,
    kinds: tuple[str, ...],
    seed: int,
    folder: str,
    send: Callable[[Any], None],
) -> None:
    """Capture, then send ("layer", rows) for each layer of the inventory, in its order."""
    wrong = _tensorflow_backend()
    if wrong is not None:
        raise UsageError(wrong)
    all_layers = layers_of(model)
    norm_layers = {layer.path: all_layers[layer.path] for layer in inventory.layers if layer.path in all_layers}
    inputs = model_inputs(model, shapes, arrays, seed)
    found = capture(model, norm_layers, inputs, folder)
    for layer in inventory.layers:
        if layer.path not in norm_layers:
            label = f"{layer.path} ({layer.kind})"
            rows = [checks.layer_row(label, FRAMEWORK, "skip", "not a layer of the model", layer.op, layer.dtype)]
        else:
            rows = check_layer(model, layer, found.get(layer.path), kinds, seed)
        cap = found.get(layer.path)
        if cap is not None:
            os.unlink(cap.file)  # each activation leaves the disk once its layer is checked
        send(("layer", rows))
