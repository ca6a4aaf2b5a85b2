"""Per-layer checks of a Flax model (a linen module with its variables, or an nnx module): run the
model once, each norm layer's input written to its own .npy file and dropped (linen: through
``flax.linen.intercept_methods``; nnx: the norm modules' ``__call__`` wrapped for the pass), then
check each layer by running the layer itself, with its own variables and mode, on the captured
activation and on the hostile input kinds: forward, and backward through ``jax.vjp`` for x, scale
and bias; a batch norm in training mode also gives its running statistics after the call.

Flax normalizes the feature axis -1 (channels last): a batch, instance or group norm's tensors
are moved to the reference's layout (channels at axis 1) and back; a layer or RMS norm's reduction
axes are moved last where they are not. The layers run jitted on the CPU, as verify's Flax cases
do. User modules named like norms are probed (as RMS or layer norm) before they are checked.
Imports flax and jax; the worker imports this module only for Flax models.
"""

from __future__ import annotations

import os

# as normcheck.frameworks.jax.adapter: JAX would otherwise reserve most of a GPU's memory
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from normcheck.errors import UsageError
from normcheck.frameworks.base import RunOutput
from normcheck.frameworks.jax.facts import HAS_FAST_VARIANCE, MODULE_NAMES, SAFE_SETTING
from normcheck.model import checks
from normcheck.model.checks import LayerSetup
from normcheck.model.flax_modules import BUILT_INS, LINEN, NNX, _join, _linen_children, _subtree
from normcheck.model.records import Inventory, NormLayer
from normcheck.names import OpName
from normcheck.ops import OpParams
from normcheck.problem import Problem
from normcheck.verify.records import CheckResult

FRAMEWORK = "jax"
ROOT = "(model)"
# eps values tried on a candidate without an eps attribute (as torch_checks.PROBE_EPS)
PROBE_EPS = (1e-5, 1e-6, 1e-8, 1e-12, float(np.finfo(np.float32).eps), 1e-3)
ROLE_KEYS = {"weight": ("scale", "weight", "gamma"), "bias": ("bias", "beta", "shift")}


@dataclass(frozen=True)
class Call:
    """A norm module as the model calls it: the module (linen: an unbound copy, nnx: the object
    itself) and the arguments it is called with besides its input."""

    module: Any
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Captured:
    file: str | None  # None: the input could not be read (a tracer, inside nn.scan or nn.jit)
    dtype: str
    call: Call
    calls: int = 1


@dataclass(frozen=True)
class FlaxModel:
    """A Flax model as the checks take it: linen (module, variables) or an nnx module."""

    kind: str  # "linen" or "nnx"
    module: Any
    variables: Mapping[str, Any] | None = None  # linen
    example: Any = None  # linen: an example input or its shape, where one is known


def as_flax_model(model: Any) -> FlaxModel | str:
    """``model`` as a FlaxModel: an nnx module; a linen module bound to its variables; a tuple
    (module, variables[, example]); or the loader's Loaded; why not, as a string."""
    if isinstance(model, FlaxModel):
        return model
    obj, variables, example = model, None, None
    if hasattr(model, "obj") and hasattr(model, "variables"):  # normcheck.model.loaders.Loaded
        obj, variables, example = model.obj, model.variables, getattr(model, "example", None)
    elif isinstance(model, tuple) and model and isinstance(model[0], nn.Module):
        obj, variables = model[0], model[1] if len(model) > 1 else None
        example = model[2] if len(model) > 2 else None
    if isinstance(obj, nnx.Module):
        return FlaxModel("nnx", obj)
    if isinstance(obj, nn.Module):
        if variables is None and obj.scope is not None:  # bound: it holds its variables
            obj, variables = obj.unbind()
        if variables is None:
            return "a flax.linen module needs its variables: give (module, variables)"
        return FlaxModel("linen", obj, variables, example)
    return f"not a Flax model ({type(obj).__name__})"


# ---- arrays ----------------------------------------------------------------------------------


def _cpu() -> Any:
    return jax.devices("cpu")[0]


def _host(a: Any) -> np.ndarray:
    """A float64 copy of a JAX or NumPy array."""
    return np.asarray(jax.device_get(a)).astype(np.float64)


def _dtype_name(a: Any) -> str:
    return str(np.dtype(getattr(a, "dtype", np.float32)))


def _value(variable: Any) -> Any:
    """An nnx Variable's array (or the array itself)."""
    if isinstance(variable, nnx.Variable):
        for get in (lambda v: v[...], lambda v: v.get_value(), lambda v: v.value):
            try:
                return get(variable)
            except Exception:
                continue
        return None
    return variable


def _x64(dtype: str) -> contextlib.AbstractContextManager[Any]:
    """float64 exists in JAX only with x64 enabled (as the adapter's ``precision``)."""
    return jax.enable_x64(True) if dtype == "float64" else contextlib.nullcontext()


def _is_array(a: Any) -> bool:
    return isinstance(a, (jax.Array, np.ndarray)) or (hasattr(a, "shape") and hasattr(a, "dtype"))


# ---- inputs and capture ----------------------------------------------------------------------


def _first_float_dtype(leaves: list[Any]) -> Any:
    for leaf in leaves:
        dt = getattr(_value(leaf), "dtype", None)
        if dt is not None and jnp.issubdtype(dt, jnp.floating):
            return dt
    return np.float32


def model_inputs(
    model: FlaxModel, shapes: tuple[tuple[int, ...], ...], arrays: list[np.ndarray] | None, seed: int
) -> list[np.ndarray]:
    """The arrays given, or seeded normal(0, 1) values of each shape in the dtype of the model's
    first floating parameter (float32 without one)."""
    if arrays is not None:
        return [np.ascontiguousarray(a) for a in arrays]
    if model.kind == "linen":
        assert model.variables is not None
        leaves = jax.tree.leaves(model.variables.get("params", {}))
    else:
        leaves = jax.tree.leaves(nnx.state(model.module, nnx.Param), is_leaf=lambda v: isinstance(v, nnx.Variable))
    dtype = _first_float_dtype(leaves)
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for shape in shapes]


class _Recorder:
    """Each norm layer's first input to its own .npy file (bfloat16 as float32, which holds it)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.found: dict[str, Captured] = {}
        self.last: list[str] = []

    def record(self, path: str, call: Callable[[], Call], args: tuple[Any, ...]) -> None:
        self.last.append(path)
        if path in self.found:
            self.found[path] = replace(self.found[path], calls=self.found[path].calls + 1)
            return
        x = args[0] if args else None
        if x is None or not _is_array(x) or not jnp.issubdtype(x.dtype, jnp.floating):
            return
        dtype = _dtype_name(x)
        if isinstance(x, jax.core.Tracer):
            self.found[path] = Captured(None, dtype, call())
            return
        file = os.path.join(self.folder, f"{len(self.found)}.npy")
        host = np.asarray(jax.device_get(x))
        np.save(file, host.astype(np.float32) if dtype == "bfloat16" else host)
        self.found[path] = Captured(file, dtype, call())


def _ran(recorder: _Recorder, inputs: list[np.ndarray], run: Callable[[], Any]) -> None:
    """Run the model; UsageError naming where, when it raises."""
    try:
        run()
    except UsageError:
        raise
    except BaseException as e:
        shapes = ", ".join("x".join(map(str, a.shape)) + f" {a.dtype}" for a in inputs)
        raise checks.model_raised(e, recorder.last, shapes) from None


def capture_linen(
    model: FlaxModel, paths: set[str], inputs: list[np.ndarray], seed: int, folder: str
) -> dict[str, Captured]:
    """One ``apply`` (every collection mutable, so a model in training mode runs; the updated
    variables are dropped, the model's own are left as they were), each norm layer's input saved."""
    recorder = _Recorder(folder)

    def note(f: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], ctx: Any) -> Any:
        if ctx.method_name == "__call__":
            path = _join(tuple(ctx.module.path))
            if path in paths:
                m = ctx.module
                recorder.record(path, lambda: Call(m.clone(parent=None), tuple(args[1:]), dict(kwargs)), args)
        return f(*args, **kwargs)

    def run() -> None:
        with nn.intercept_methods(note):
            model.module.apply(model.variables, *inputs, mutable=True, rngs={"dropout": jax.random.key(seed)})

    _ran(recorder, inputs, run)
    return recorder.found


def capture_nnx(model: FlaxModel, paths: set[str], inputs: list[np.ndarray], folder: str) -> dict[str, Captured]:
    """One call of the model with each norm module's ``__call__`` wrapped (its class's, for the
    pass); every variable of the model (running statistics, RNG counts) restored after it."""
    recorder = _Recorder(folder)
    by_id: dict[int, str] = {}
    for raw, node in nnx.iter_graph(model.module):
        path = _join(tuple(raw))
        if isinstance(node, nnx.Module) and path in paths:
            by_id.setdefault(id(node), path)
    classes = {type(node) for _, node in nnx.iter_graph(model.module) if id(node) in by_id}
    originals: dict[type, Any] = {cls: cls.__dict__.get("__call__") for cls in classes}

    active: set[int] = set()  # a subclass's wrapped __call__ calling its base's: one call

    def wrap(cls: type) -> Callable[..., Any]:
        inner = cls.__call__

        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            path = by_id.get(id(self))
            if path is None or id(self) in active:
                return inner(self, *args, **kwargs)
            recorder.record(path, lambda: Call(self, tuple(args[1:]), dict(kwargs)), args)
            active.add(id(self))
            try:
                return inner(self, *args, **kwargs)
            finally:
                active.discard(id(self))

        return call

    saved = jax.tree.map(lambda a: a, nnx.state(model.module))
    try:
        for cls in classes:
            setattr(cls, "__call__", wrap(cls))  # noqa: B010 (restored below)
        _ran(recorder, inputs, lambda: model.module(*inputs))
    finally:
        for cls, original in originals.items():
            if original is None:
                delattr(cls, "__call__")
            else:
                setattr(cls, "__call__", original)  # noqa: B010
        nnx.update(model.module, saved)
    return recorder.found


# ---- finding a layer -------------------------------------------------------------------------


# the last abstract passes: (module, example shape) -> calls; the module is held, so its id stays its own
_CALLS: list[tuple[Any, str, dict[str, Call]]] = []


def linen_calls(model: FlaxModel) -> dict[str, Call]:
    """Every module the model calls on its example input (an abstract pass, no computation), by
    path, with its call's other arguments; empty without an example."""
    if model.example is None:
        return {}
    key = repr(tuple(model.example) if isinstance(model.example, (tuple, list)) else np.shape(model.example))
    for module, example_key, cached in _CALLS:
        if module is model.module and example_key == key:
            return cached
    seen: dict[str, Call] = {}

    def note(f: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], ctx: Any) -> Any:
        if ctx.method_name == "__call__":
            path = _join(tuple(ctx.module.path))
            if path not in seen:
                seen[path] = Call(ctx.module.clone(parent=None), tuple(args[1:]), dict(kwargs))
        return f(*args, **kwargs)

    example = model.example
    shape = tuple(example) if isinstance(example, (tuple, list)) else tuple(np.shape(example))
    dtype = getattr(example, "dtype", np.float32) if not isinstance(example, (tuple, list)) else np.float32
    x = jax.ShapeDtypeStruct(shape, dtype)
    try:
        with nn.intercept_methods(note):
            jax.eval_shape(lambda v, x: model.module.apply(v, x, mutable=True), model.variables, x)
    except Exception:
        seen = {}
    _CALLS[:] = [*_CALLS[-3:], (model.module, key, seen)]
    return seen


def _linen_setup_modules(model: FlaxModel) -> Iterator[tuple[str, Any]]:
    """The model's modules its fields and ``setup`` define, bound, by path."""
    todo = [model.module.bind(model.variables)]
    while todo:
        m = todo.pop(0)
        yield _join(tuple(m.path) if m.scope is not None else ()), m
        todo[:0] = list(_linen_children(m))


def find_call(model: FlaxModel, path: str) -> Call | str:
    """The module at ``path`` (its calls' arguments where an example input shows them)."""
    if model.kind == "nnx":
        for raw, node in nnx.iter_graph(model.module):
            if isinstance(node, nnx.Module) and _join(tuple(raw)) == path:
                return Call(node)
        return f"no module at {path}"
    found = linen_calls(model).get(path)
    if found is not None:
        return found
    for p, m in _linen_setup_modules(model):
        if p == path:
            return Call(m.clone(parent=None))
    return "a @compact submodule: it exists only while the model runs (give an input to find it)"


# ---- a layer's variables -----------------------------------------------------------------------


@dataclass
class Layer:
    """A layer ready to run: a function of (params, state, x) -> (y, new state), its params (a
    pytree whose ``roles`` keys hold the weight and bias) and state (batch norm's running
    statistics under "mean" and "var")."""

    apply: Callable[[Any, Any, Any], tuple[Any, Any]]
    params: Any
    state: Any
    roles: dict[str, str]  # "weight"/"bias" -> the key in params
    running: tuple[str, str] | None = None  # the keys of the running mean and variance
    stats: Any = None  # the tree holding them, as the layer has them (``apply`` returns the new one)

    def role(self, tree: Any, role: str) -> np.ndarray | None:
        key = self.roles.get(role)
        if key is None:
            return None
        value = _value(tree[key])
        return None if value is None else _host(value)

    def stat(self, tree: Any, which: int) -> tuple[np.ndarray, str] | None:
        if self.running is None:
            return None
        value = _value(tree[self.running[which]])
        return _host(value), _dtype_name(value)


def _roles(keys: Any) -> dict[str, str]:
    out = {}
    for role, names in ROLE_KEYS.items():
        key = next((k for k in names if k in keys), None)
        if key is not None:
            out[role] = key
    return out


def _static(call: Call) -> str | None:
    """Why the call's other arguments cannot be replayed (an array: a mask), or None."""
    leaves = jax.tree.leaves((call.args, dict(call.kwargs)))
    if any(_is_array(leaf) for leaf in leaves):
        return "called with an array besides its input (a mask): not checked"
    return None


def linen_layer(model: FlaxModel, path: str, call: Call) -> Layer:
    assert model.variables is not None
    parts = () if path == ROOT else tuple(path.split("/"))
    collections = {c: _subtree(model.variables, c, parts) for c in model.variables}
    params = dict(collections.pop("params", {}))
    state = {c: v for c, v in collections.items() if v}
    module, args, kwargs = call.module, call.args, dict(call.kwargs)
    mutable = list(state)

    def apply(p: Any, s: Any, x: Any) -> tuple[Any, Any]:
        variables = {"params": p, **s}
        if not mutable:
            return module.apply(variables, x, *args, **kwargs), s
        y, updated = module.apply(variables, x, *args, mutable=mutable, **kwargs)
        return y, {**s, **updated}

    stats = state.get("batch_stats", {})
    running = None
    if isinstance(stats, Mapping) and "mean" in stats and "var" in stats:
        running = ("mean", "var")

    def stat_apply(p: Any, s: Any, x: Any) -> tuple[Any, Any]:
        y, new = apply(p, s, x)
        return y, new.get("batch_stats", {})

    return Layer(stat_apply if running else apply, params, state, _roles(params), running, stats)


def nnx_layer(call: Call) -> Layer:
    module = nnx.clone(call.module)
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    args, kwargs = call.args, dict(call.kwargs)

    def apply(p: Any, s: Any, x: Any) -> tuple[Any, Any]:
        m = nnx.merge(graphdef, p, jax.tree.map(lambda a: a, s))  # fresh variables, at this trace
        y = m(x, *args, **kwargs)
        return y, nnx.state(m, nnx.BatchStat)

    stats = nnx.state(module, nnx.BatchStat)
    running = ("mean", "var") if "mean" in stats and "var" in stats else None
    return Layer(apply, params, rest, _roles(set(params.keys())), running, stats)


# ---- running a layer ---------------------------------------------------------------------------


GRADS: tuple[str, ...] = ("weight", "bias")  # the parameter gradients a layer's checks compare


def _wider(got: str, case: str) -> bool:
    """Whether a result in dtype ``got`` holds more than the case's dtype (float32 for bfloat16)."""
    try:
        return got != case and np.dtype(got).itemsize > np.dtype(case).itemsize
    except TypeError:
        return False


def _in_case_dtype(a: Any, case_dtype: str) -> tuple[np.ndarray, str]:
    """A forward or input gradient as the case's dtype holds it: a wider result (nnx's BatchNorm
    promotes a bfloat16 input to its float32 statistics' dtype; a float32 input's gradient of a
    layer computing in bfloat16) rounded to it, which is what the dtype's tolerance allows for."""
    from normcheck.dtypes import quantize

    host, got = _host(a), _dtype_name(a)
    if _wider(got, case_dtype):
        return quantize(host, case_dtype), case_dtype
    return host, got


def make_run(
    layer: Layer,
    dtype: str,
    case_dtype: str,
    running: bool,
    grads: tuple[str, ...],
    runner_perm: tuple[int, ...] | None,
) -> Callable[[Problem], RunOutput]:
    """run(problem) on the layer: x and dy moved to the layer's layout and to ``dtype`` (the
    activation's), on the CPU; forward, the vjp for x and the parameters (``grads``: which of
    weight and bias are compared), the running statistics, back in the reference's layout."""
    inverse = None if runner_perm is None else tuple(int(i) for i in np.argsort(runner_perm))

    def to_layer(a: np.ndarray) -> np.ndarray:
        return a if inverse is None else np.transpose(a, inverse)

    def to_ref(a: np.ndarray) -> np.ndarray:
        return a if runner_perm is None else np.transpose(a, runner_perm)

    def case(params: Any, state: Any, x: Any, dy: Any) -> tuple[Any, Any, Any, Any]:
        y, pullback, new = jax.vjp(lambda x_, p_: layer.apply(p_, state, x_), x, params, has_aux=True)
        dx, dparams = pullback(dy.astype(y.dtype))
        return y, new, dx, dparams

    compiled = jax.jit(case)

    def run(problem: Problem) -> RunOutput:
        cpu = _cpu()
        with _x64(dtype), jax.default_device(cpu):
            params = jax.device_put(layer.params, cpu)
            state = jax.device_put(layer.state, cpu)
            x = jax.device_put(to_layer(np.asarray(problem.x)).astype(jnp.dtype(dtype)), cpu)
            dy = jax.device_put(to_layer(np.asarray(problem.dy)).astype(jnp.dtype(dtype)), cpu)
            y, new, dx, dparams = compiled(params, state, x, dy)
            out = RunOutput()
            for check, a in (("forward", y), ("grad_input", dx)):
                host, got = _in_case_dtype(a, case_dtype)
                out.add(check, to_ref(host), got)
            for role, check in (("weight", "grad_weight"), ("bias", "grad_bias")):
                if role in grads and role in layer.roles:
                    g = layer.role(dparams, role)
                    if g is not None:
                        out.add(check, g, _dtype_name(_value(dparams[layer.roles[role]])))
            if running:
                for which, name in enumerate(("running_mean", "running_var")):
                    found = layer.stat(new, which)
                    if found is not None:
                        out.add(name, found[0], found[1])
        return out

    return run


# ---- a built-in layer's setup ----------------------------------------------------------------


def _axes(value: Any, ndim: int) -> tuple[int, ...] | None:
    if isinstance(value, int):
        value = (value,)
    if not isinstance(value, (tuple, list)) or not all(isinstance(a, int) for a in value):
        return None
    return tuple(sorted({a % ndim for a in value}))


def _channels_first(ndim: int, axis: int) -> tuple[int, ...] | None:
    """The permutation taking channels at ``axis`` to axis 1 (the rest in order); None if none."""
    perm = (0, axis, *(a for a in range(ndim) if a not in (0, axis)))
    return None if perm == tuple(range(ndim)) else perm


def _last(ndim: int, axes: tuple[int, ...]) -> tuple[int, ...] | None:
    """The permutation moving ``axes`` last (the others, then they, each in order)."""
    perm = (*(a for a in range(ndim) if a not in axes), *axes)
    return None if perm == tuple(range(ndim)) else perm


def _compute_dtype(module: Any, dtype: str) -> str | None:
    """The dtype the layer's result is in, where its ``dtype`` field narrows the activation's."""
    want = getattr(module, "dtype", None)
    if want is None:
        return None
    try:
        name = str(np.dtype(want))
    except TypeError:
        return None
    if name == dtype or checks.dtype_name(name) is None:
        return None
    return name if np.dtype(name).itemsize < np.dtype(dtype).itemsize else None


@dataclass(frozen=True)
class Built:
    setup: LayerSetup
    permutation: tuple[int, ...] | None
    grads: tuple[str, ...] = GRADS
    note: str = ""


def _use_running_average(module: Any, call: Call, nnx_module: bool) -> bool | None:
    given = call.kwargs.get("use_running_average", call.args[0] if call.args else None)
    own = getattr(module, "use_running_average", None)
    if nnx_module:
        return given if given is not None else own
    return own if given is None else given


def builtin_setup(
    module: Any, op: OpName, call: Call, layer: Layer, x: np.ndarray, dtype: str, nnx_module: bool
) -> Built | str:
    """A Flax built-in layer's setup, read from the module's own fields and variables."""
    d = checks.dtype_name(dtype)
    if d is None:
        return f"activation dtype {dtype} is not one normcheck checks"
    narrower = _compute_dtype(module, dtype)
    note = ""
    if narrower is not None:
        d = checks.dtype_name(narrower) or d
        note = f"computes in {narrower} (dtype={narrower}): checked in {narrower}, its {dtype} input gradient rounded"
    ndim = x.ndim
    w, b = layer.role(layer.params, "weight"), layer.role(layer.params, "bias")
    affine = w is not None or b is not None
    eps = float(module.epsilon)
    name = MODULE_NAMES[op]
    fast = bool(getattr(module, "use_fast_variance", True))
    known: str | None = name + ("" if fast or op not in HAS_FAST_VARIANCE else f"({SAFE_SETTING})")
    if getattr(module, "force_float32_reductions", True) is False:
        known = None  # not the configuration verify documents
    if ndim < 2:
        return f"a {ndim}-D input: not checked"
    grads = GRADS
    if op == "bn":
        axes = _axes(getattr(module, "axis", -1), ndim)
        if axes is None or len(axes) != 1 or axes[0] == 0:
            return f"batch norm over features at axis {getattr(module, 'axis', None)!r}: not checked"
        running_average = _use_running_average(module, call, nnx_module)
        if running_average is None:
            return "use_running_average is given neither to the module nor to its call: its mode is not known"
        training = not running_average
        if training and getattr(module, "axis_name", None) is not None:
            return f"its statistics are averaged over the devices of axis {module.axis_name!r}: not checked"
        if layer.running is None:
            return "its running statistics were not found"
        rm, _ = layer.stat(layer.stats, 0) or (None, "")
        rv, _ = layer.stat(layer.stats, 1) or (None, "")
        params = OpParams(mode="train" if training else "eval", running_stats=True, affine=affine)
        momentum = 1.0 - float(module.momentum)  # Flax's momentum weighs the old value
        setup = LayerSetup(op, params, eps, d, momentum, w, b, rm, rv, False, known_impl=known)
        return Built(setup, _channels_first(ndim, axes[0]), grads, note)
    if op == "in":
        axes = _axes(getattr(module, "feature_axes", -1), ndim)
        if axes is None or len(axes) != 1 or axes[0] == 0:
            return f"instance norm with feature axes {getattr(module, 'feature_axes', None)!r}: not checked"
        setup = LayerSetup(op, OpParams(affine=affine), eps, d, 0.1, w, b, known_impl=known)
        return Built(setup, _channels_first(ndim, axes[0]), grads, note)
    if op == "gn":
        reduction = getattr(module, "reduction_axes", None)
        if reduction is not None and _axes(reduction, ndim) != tuple(range(1, ndim)):
            return f"group norm over axes {reduction!r}, not every axis but the batch: not checked"
        channels = x.shape[-1]
        groups, size = getattr(module, "num_groups", None), getattr(module, "group_size", None)
        if groups is None and isinstance(size, int) and size > 0:
            groups = channels // size
        if not isinstance(groups, int):
            return "its group count is not known"
        setup = LayerSetup(op, OpParams(groups=groups, affine=affine), eps, d, 0.1, w, b, known_impl=known)
        return Built(setup, _channels_first(ndim, ndim - 1), grads, note)
    reduction = _axes(getattr(module, "reduction_axes", -1), ndim)
    features = _axes(getattr(module, "feature_axes", -1), ndim)
    if reduction is None or features is None or 0 in reduction:
        return f"statistics over axes {getattr(module, 'reduction_axes', None)!r}: not checked"
    if not set(features) <= set(reduction):
        return f"feature axes {features} outside the reduction axes {reduction}: not checked"
    k = len(reduction)
    normalized = tuple(x.shape[a] for a in reduction)
    if features != reduction:  # a scale over some of the normalized axes, broadcast over the others
        shape = tuple(x.shape[a] if a in features else 1 for a in reduction)
        w = None if w is None else np.broadcast_to(w.reshape(shape), normalized).copy()
        b = None if b is None else np.broadcast_to(b.reshape(shape), normalized).copy()
        grads = ()
        why = f"its scale and bias cover feature axes {features} of the normalized {reduction}: not compared"
        missing = {"grad_weight": why, "grad_bias": why}
    else:
        missing = {}
    params = OpParams(normalized_ndim=k, affine=affine)
    setup = LayerSetup(op, params, eps, d, 0.1, w, b, missing=missing, known_impl=known)
    return Built(setup, _last(ndim, reduction), grads, note)


# ---- candidates: probed first ------------------------------------------------------------------


def _candidate_setups(record: NormLayer, layer: Layer, x: np.ndarray, dtype: str) -> Iterator[tuple[LayerSetup, str]]:
    """The readings of a candidate the probe tries: RMS or layer norm (as its name says, else
    both) over its trailing dims (as many as its weight has, or one), with its eps (or each of
    PROBE_EPS), its weight as w or as 1 + w."""
    d = checks.dtype_name(dtype)
    if d is None:
        return
    w, b = layer.role(layer.params, "weight"), layer.role(layer.params, "bias")
    ops: list[OpName] = [record.op] if record.op in ("ln", "rms") else ["rms", "ln"]
    eps_values = [float(record.eps)] if isinstance(record.eps, (int, float)) else list(PROBE_EPS)
    ks = [w.ndim] if w is not None else []
    ks.append(1)
    for op in ops:
        if op == "rms" and b is not None:
            continue
        for k in dict.fromkeys(ks):
            if k > x.ndim:
                continue
            want = tuple(x.shape[x.ndim - k :])
            if (w is not None and w.shape != want) or (b is not None and b.shape != want):
                continue
            params = OpParams(normalized_ndim=k, affine=w is not None or b is not None)
            for eps in eps_values:
                for one_plus in (False, True) if w is not None else (False,):
                    weight = None if w is None else (w + 1.0 if one_plus else w)
                    label = f"{op}, eps {eps:g}" + (", weight applied as 1 + w" if one_plus else "")
                    yield LayerSetup(op, params, eps, d, 0.1, weight, b), label


def _forward(layer: Layer, x: np.ndarray, dtype: str) -> np.ndarray | None:
    cpu = _cpu()
    with _x64(dtype), jax.default_device(cpu):
        params, state = jax.device_put((layer.params, layer.state), cpu)
        y, _ = layer.apply(params, state, jax.device_put(x.astype(jnp.dtype(dtype)), cpu))
    return _host(y) if _is_array(y) else None


def probe(
    record: NormLayer, layer: Layer, x: np.ndarray, dtype: str, run: Callable[[Problem], RunOutput]
) -> tuple[LayerSetup, str] | str:
    """What a candidate computes, tried on its captured activation (as torch_checks.probe): a
    reading whose reference its output matches within verify's tolerance (an eps found by search
    confirmed on an input of spread sqrt(eps)), or one that matches but for one known mistake;
    (setup, what matched), or why none did."""
    if record.op not in (None, "ln", "rms"):
        return f"unconfirmed: probing a Flax candidate tries RMS and layer norm, and its name says {record.op}"
    try:
        y = _forward(layer, x, dtype)
    except Exception as e:
        return f"unconfirmed: the layer raised {checks.describe_error(e)} on its own input"
    if y is None:
        return "unconfirmed: the layer does not return an array"
    searched = not isinstance(record.eps, (int, float))
    for setup, label in _candidate_setups(record, layer, x, dtype):
        if not checks.forward_matches(setup, x, y):
            continue
        if searched:
            from normcheck.dtypes import quantize

            small = quantize(math.sqrt(setup.eps) * np.random.default_rng(0).standard_normal(x.shape), setup.dtype)
            try:
                ys = _forward(layer, small, dtype)
            except Exception:
                continue
            if ys is None or not checks.forward_matches(setup, small, ys):
                continue
        return setup, label
    if not searched:
        explained = _explained(record, layer, x, dtype, run)
        if explained is not None:
            return explained
    return "unconfirmed: behaves like no normalization normcheck knows (probed on its captured input)"


def _explained(
    record: NormLayer, layer: Layer, x: np.ndarray, dtype: str, run: Callable[[Problem], RunOutput]
) -> tuple[LayerSetup, str] | None:
    """A reading every failing check of the captured case of which one known mistake reproduces
    (a diagnosis of the case, not ambiguous): the layer is that op, and fails with that cause."""
    for setup, label in _candidate_setups(record, layer, x, dtype):
        cause = checks.one_mistake(FRAMEWORK, setup, x, run)
        if cause is not None:
            return setup, f"{label}, but for one known mistake: {cause}"
    return None


# ---- the runner ------------------------------------------------------------------------------


def _builtin_op(module: Any) -> tuple[OpName, str] | None:
    """A Flax built-in norm module's op and kind ("flax.linen.BatchNorm")."""
    cls = type(module)
    if cls.__name__ not in BUILT_INS:
        return None
    if cls.__module__ == LINEN:
        return BUILT_INS[cls.__name__], f"flax.linen.{cls.__name__}"
    if cls.__module__ == NNX:
        return BUILT_INS[cls.__name__], f"flax.nnx.{cls.__name__}"
    return None


def runner_for(
    model: Any, record: NormLayer, x: np.ndarray, dtype: str, calls: Mapping[str, Call] | None = None
) -> checks.LayerRunner | str:
    """The layer at ``record.path`` of ``model`` (an nnx module; linen: the loader's Loaded, a
    (module, variables[, example]) tuple or a bound module) ready to run on inputs like ``x`` (in
    the layer's own layout, channels last); why not, as a string. ``calls``: the modules a capture
    pass found, with the arguments of their calls (a batch norm's use_running_average)."""
    flax_model = as_flax_model(model)
    if isinstance(flax_model, str):
        return flax_model
    given = calls.get(record.path) if calls is not None else None
    call = given if given is not None else find_call(flax_model, record.path)
    if isinstance(call, str):
        return call
    why = _static(call)
    if why is not None:
        return why
    nnx_module = flax_model.kind == "nnx"
    try:
        layer = nnx_layer(call) if nnx_module else linen_layer(flax_model, record.path, call)
    except Exception as e:
        return f"its variables could not be read: {checks.describe_error(e)}"
    builtin = _builtin_op(call.module)
    notes: list[str] = []
    if builtin is not None:
        op, kind = builtin
        built = builtin_setup(call.module, op, call, layer, x, dtype, nnx_module)
        if isinstance(built, str):
            return built
        setup, permutation, grads = built.setup, built.permutation, built.grads
        notes += [built.note] if built.note else []
    else:
        found = probe(record, layer, x, dtype, make_run(layer, dtype, dtype, False, GRADS, None))
        if isinstance(found, str):
            return found
        setup, how = found
        kind, permutation, grads = record.kind, None, GRADS
        notes.append(f"probed: {how}")
    wider = _result_dtype(layer, x, dtype)
    if wider is not None and _wider(wider, setup.dtype):
        notes.append(f"returns {wider}: rounded to {setup.dtype} for the checks")
    label = f"{record.path} ({'; '.join([kind, *notes])})"
    run = make_run(layer, dtype, setup.dtype, setup.params.running_stats, grads, permutation)
    return checks.LayerRunner(setup, run, label, FRAMEWORK, permutation=permutation)


def _result_dtype(layer: Layer, x: np.ndarray, dtype: str) -> str | None:
    """The dtype of the layer's output on an input like ``x`` (traced, not run)."""
    try:
        with _x64(dtype):
            spec = jax.ShapeDtypeStruct(x.shape, jnp.dtype(dtype))
            out = jax.eval_shape(lambda p, s, x_: layer.apply(p, s, x_)[0], layer.params, layer.state, spec)
        return _dtype_name(out)
    except Exception:
        return None


def check_layer(
    model: FlaxModel,
    record: NormLayer,
    captured: Captured | None,
    calls: Mapping[str, Call],
    kinds: tuple[str, ...],
    seed: int,
) -> list[CheckResult]:
    label = f"{record.path} ({record.kind})"
    if captured is None:
        return [
            checks.layer_row(
                label, FRAMEWORK, "skip", "not called by the model's forward on this input", record.op, record.dtype
            )
        ]
    if captured.file is None:
        why = "its input is traced (inside a lifted transform: nn.jit, nn.scan, nn.remat): not captured"
        return [checks.layer_row(label, FRAMEWORK, "skip", why, record.op, captured.dtype)]
    x = np.load(captured.file).astype(np.float64)
    try:
        runner = runner_for(model, record, x, captured.dtype, calls)
    except Exception as e:  # the user's module, read or probed
        why = f"reading the layer raised {checks.describe_error(e)}"
        return [checks.layer_row(label, FRAMEWORK, "error", why, record.op, captured.dtype)]
    if isinstance(runner, str):
        return [checks.layer_row(label, FRAMEWORK, "skip", runner, record.op, captured.dtype)]
    return runner.rows(x, kinds, seed, record.path, captured.calls)


def check_flax(
    model: Any,
    inventory: Inventory,
    shapes: tuple[tuple[int, ...], ...],
    arrays: list[np.ndarray] | None,
    kinds: tuple[str, ...],
    seed: int,
    folder: str,
    send: Callable[[Any], None],
) -> None:
    """Capture, then send ("layer", rows) for each layer of the inventory, in its order.
    ``model``: the loader's Loaded (linen: it holds the variables), or an nnx module."""
    flax_model = as_flax_model(model)
    if isinstance(flax_model, str):
        raise UsageError(flax_model)
    paths = {layer.path for layer in inventory.layers}
    inputs = model_inputs(flax_model, shapes, arrays, seed)
    if flax_model.kind == "linen":
        found = capture_linen(flax_model, paths, inputs, seed, folder)
    else:
        found = capture_nnx(flax_model, paths, inputs, folder)
    calls = {path: cap.call for path, cap in found.items()}
    for layer in inventory.layers:
        cap = found.get(layer.path)
        try:
            rows = check_layer(flax_model, layer, cap, calls, kinds, seed)
        finally:
            if cap is not None and cap.file is not None:
                os.unlink(cap.file)  # each activation leaves the disk once its layer is checked
        send(("layer", rows))
