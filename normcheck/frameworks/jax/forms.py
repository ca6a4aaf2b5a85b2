"""JAX user implementations: pure functions with the signature of the torch.nn.functional op
(channels first), and flax.linen modules with the fields of the Flax layer (channels last).

Both run the whole case (training steps, forward, vjp) as one function through the JAX adapter's
machinery, under jax.jit when the code can be traced and op by op when it cannot.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from normcheck.conventions import Convention
from normcheck.frameworks import CONVENTIONS, FORMS
from normcheck.frameworks.base import Implementation, RunOutput
from normcheck.frameworks.jax.adapter import (
    JAX_DTYPES,
    ApplyFn,
    Arrays,
    CaseFn,
    Compiled,
    Forward,
    case_function,
    check_layout,
    jax_device,
    module_apply,
    precision,
    run_case,
)
from normcheck.frameworks.jax.facts import FLAX_FIELDS, MODULE_NAMES, OPTIONAL_FIELDS, field_values
from normcheck.names import CHANNELS_LAST, CONTIGUOUS, Layout
from normcheck.ops import OPS
from normcheck.ops._op import required
from normcheck.ops.layer_norm import NOBIAS
from normcheck.ops.rms_norm import GEMMA
from normcheck.problem import Problem

# Raised while tracing code that needs concrete values (Python branches on array values, NumPy
# conversions): such code cannot be jitted, but may run op by op.
TRACING_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerIntegerConversionError,
)
HALF = ("float16", "bfloat16")


def build(
    form: str, op: str, obj: object, name: str, omit_defaults: bool, backward: object = None
) -> Implementation | None:
    """The implementation of ``op`` by the user's ``obj`` in ``form`` (both forms have every op)."""
    convention = CONVENTIONS[FORMS[form].conventions_of][op]
    if form == "jax_function":
        return FunctionImplementation(op, obj, name, omit_defaults, convention)
    if form == "flax_module":
        return ModuleImplementation(op, obj, name, omit_defaults, convention)
    raise ValueError(f"the jax forms have no form {form!r}")


class JitOrEager:
    """A case function under jax.jit; op by op from the first time it cannot be traced."""

    def __init__(self, run: CaseFn) -> None:
        self.run, self.jitted, self.eager = run, jax.jit(run), False

    def __call__(self, *args: Any) -> tuple:
        if not self.eager:
            try:
                return self.jitted(*args)
            except TRACING_ERRORS:
                self.eager = True
        return self.run(*args)


class UserImplementation(Implementation):
    framework = "jax"

    def __init__(self, op: str, obj: Any, name: str, omit_defaults: bool, convention: Convention) -> None:
        self.op, self.obj, self.name, self.omit, self.convention = op, obj, name, omit_defaults, convention
        self.label = getattr(obj, "__qualname__", None) or name  # in messages: the user's own name

    def run(self, problem: Problem, layout: str, device: str) -> RunOutput:
        check_layout(self, problem.shape, layout)
        with precision(problem.dtype):
            return run_case(self.prepare(problem, layout), problem, layout, jax_device(device))

    def prepare(self, problem: Problem, layout: str) -> Compiled:
        raise NotImplementedError

    def apply_fn(self, problem: Problem, layout: str) -> Forward:
        """The case's forward on arrays in ``layout``, not compiled (under ``precision(problem.dtype)``)."""
        raise NotImplementedError

    def momentum(self, problem: Problem) -> float:
        """The problem's momentum (PyTorch's meaning) in the form's own meaning."""
        return self.convention.to_framework_momentum(problem.momentum)


# -- functions with torch.nn.functional's signature -------------------------------------------


@dataclass(frozen=True)
class FunctionCall:
    """How a case calls the user's function, all but the arrays: hashable, the compile cache key."""

    fn: Callable
    label: str
    op: str
    args: tuple  # after x: num_groups, or normalized_shape
    kwargs: tuple[tuple[str, Any], ...]  # eps, momentum; weight=None and bias=None when given explicitly
    weight_names: tuple[str, ...]  # the keywords the params go in as: weight (and bias)
    stats: bool  # running statistics are passed (and returned)
    flag: str | None  # "training" (batch norm) or "use_input_stats" (instance norm)
    flag_default: bool
    omit: bool  # leave the flag out where its default says the same
    training: bool  # problem.x runs on batch statistics


class FunctionImplementation(UserImplementation):
    """``fn(x, ...)`` with the arguments of the torch.nn.functional op, on channels-first arrays.

    Given running statistics it returns (y, new_running_mean, new_running_var), otherwise y.
    The running statistics are float32 for float16/bfloat16 input, else the input's dtype.
    The variants call it the same way: Gemma's RMS norm with the stored weight (the function
    adds the 1), layer norm without bias with ``bias=None``.
    """

    extensions = frozenset({GEMMA, NOBIAS})

    def call(self, problem: Problem) -> FunctionCall:
        p = problem.params
        kwargs: dict[str, Any] = {}
        if not self.omit:
            kwargs["eps"] = problem.eps
            if self.op in ("bn", "in"):
                kwargs["momentum"] = self.momentum(problem)
            if self.op == "in" and not p.running_stats:
                kwargs.update(running_mean=None, running_var=None)
        weight_names = ("weight",) if self.op == "rms" else ("weight", "bias")
        if not p.affine and not self.omit:
            kwargs.update(dict.fromkeys(weight_names))
        args: tuple = ()
        if self.op == "gn":
            args = (p.groups,)
        elif self.op in ("ln", "rms"):
            args = (tuple(problem.shape[len(problem.shape) - required(p.normalized_ndim, "normalized_ndim") :]),)
        flag, flag_default = {"bn": ("training", False), "in": ("use_input_stats", True)}.get(self.op, (None, False))
        return FunctionCall(
            fn=self.obj,
            label=self.label,
            op=self.op,
            args=args,
            kwargs=tuple(kwargs.items()),
            weight_names=weight_names if p.affine else (),
            stats=p.running_stats,
            flag=flag,
            flag_default=flag_default,
            omit=self.omit,
            training=p.mode == "train" or not p.running_stats,
        )

    def prepare(self, problem: Problem, layout: str) -> Compiled:
        return Compiled(_function_case(self.call(problem)), _function_stats_dtype(problem))

    def apply_fn(self, problem: Problem, layout: str) -> Forward:
        check_layout(self, problem.shape, layout)
        call = self.call(problem)
        return Forward(_function_apply(call), call.training, _function_stats_dtype(problem))


def _function_stats_dtype(problem: Problem) -> Any:
    return JAX_DTYPES["float32" if problem.dtype in HALF else problem.dtype]


@functools.lru_cache(maxsize=64)  # verify runs a configuration's input kinds one after another
def _function_case(call: FunctionCall) -> JitOrEager:
    return JitOrEager(case_function(_function_apply(call), call.training))


def _function_apply(call: FunctionCall) -> ApplyFn:
    """apply(params, stats, x, training) -> (y, stats) calling the user's function as ``call`` says."""

    def apply(params: Arrays, stats: Arrays, x: jax.Array, training: bool) -> tuple[jax.Array, Arrays]:
        kwargs = dict(call.kwargs)
        kwargs.update(zip(call.weight_names, (params.get("scale"), params.get("bias")), strict=False))
        args = (x, *call.args)
        if call.stats and call.op == "bn":
            args += (stats["mean"], stats["var"])
        elif call.stats:
            kwargs.update(running_mean=stats["mean"], running_var=stats["var"])
        if call.flag and not (call.omit and training == call.flag_default):
            kwargs[call.flag] = training  # both flags mean: normalize with the batch statistics
        return _unpack(call, call.fn(*args, **kwargs), stats)

    return apply


def _unpack(call: FunctionCall, out: Any, stats: Arrays) -> tuple[Any, Arrays]:
    """(y, running statistics) from what the user's function returned, or a clear TypeError."""
    if not call.stats:
        if isinstance(out, tuple | list):
            raise TypeError(
                f"{call.label} was given no running statistics, so it must return the output array alone; "
                f"it returned a {type(out).__name__} of {len(out)}"
            )
        return out, stats
    if not isinstance(out, tuple | list) or len(out) != 3 or out[1] is None or out[2] is None:
        if isinstance(out, tuple | list):
            got = f"a {type(out).__name__} of {len(out)}" if len(out) != 3 else "None for a running statistic"
        else:
            got = "one array" if hasattr(out, "shape") else type(out).__name__
        raise TypeError(
            f"{call.label} was given running statistics, so it must return (y, new_running_mean, "
            f"new_running_var) as JAX arrays cannot be updated in place; it returned {got}"
        )
    return out[0], {"mean": out[1], "var": out[2]}


# -- flax.linen modules with the fields of Flax's layers ---------------------------------------

SCALE_AND_BIAS = ("scale", "bias")


@dataclass(frozen=True)
class ModuleCall:
    """How a case constructs and applies the user's module, all but the arrays (the cache key)."""

    cls: type
    label: str
    op: str
    fields: tuple[tuple[str, Any], ...]
    shape: tuple[int, ...]  # of x, in the module's layout
    dtype: str
    params: tuple[tuple[str, tuple[int, ...]], ...]  # the parameters it must have, with their shapes
    training: bool


class ModuleImplementation(UserImplementation):
    """``cls(**fields)`` applied to channels-last input, params "scale"/"bias" set to the case's
    weight and bias, batch norm's running statistics in batch_stats "mean"/"var"."""

    def layouts(self, shape: tuple[int, ...]) -> tuple[Layout, ...]:
        if self.op in ("ln", "rms") or len(shape) == 2:  # trailing axes, or both layouts are one
            return (CONTIGUOUS,)
        return (CHANNELS_LAST,)

    def unsupported(self, problem: Problem, layout: str) -> str | None:
        if self.op == "in" and problem.params.running_stats:
            return "a Flax instance norm keeps no running statistics (flax.linen.InstanceNorm has none)"
        return None

    def fields(self, problem: Problem) -> dict[str, Any]:
        """The constructor's keyword arguments: all of them, or with omit_defaults only those the
        class requires or whose value differs from the Flax layer's default."""
        momentum = self.momentum(problem) if problem.params.running_stats else None
        values = field_values(problem.params, problem.eps, momentum)
        declared = {f.name: f for f in dataclasses.fields(self.obj)} if dataclasses.is_dataclass(self.obj) else {}
        chosen = {}
        for name, default in FLAX_FIELDS[self.op].items():
            if name in OPTIONAL_FIELDS and name not in declared:
                continue
            if self.omit and values[name] == default and not _required(declared.get(name)):
                continue
            chosen[name] = values[name]
        return chosen

    def call(self, problem: Problem, layout: str) -> ModuleCall:
        p = problem.params
        shape = problem.shape
        if layout == CHANNELS_LAST:
            shape = (shape[0], *shape[2:], shape[1])
        names = SCALE_AND_BIAS[: 1 if self.op == "rms" else 2] if p.affine else ()
        pshape = OPS[self.op].param_shape(problem.shape, p)
        return ModuleCall(
            cls=self.obj,
            label=self.label,
            op=self.op,
            fields=tuple(self.fields(problem).items()),
            shape=shape,
            dtype=problem.dtype,
            params=tuple((n, pshape) for n in names),
            training=p.mode == "train" or not p.running_stats,
        )

    def prepare(self, problem: Problem, layout: str) -> Compiled:
        return _module_case(self.call(problem, layout))

    def apply_fn(self, problem: Problem, layout: str) -> Forward:
        check_layout(self, problem.shape, layout)
        return _module_forward(self.call(problem, layout))


def _required(field: dataclasses.Field | None) -> bool:
    missing = dataclasses.MISSING
    return field is not None and field.default is missing and field.default_factory is missing


@functools.lru_cache(maxsize=64)
def _module_case(call: ModuleCall) -> Compiled:
    fwd = _module_forward(call)
    return Compiled(JitOrEager(case_function(fwd.apply, fwd.training)), fwd.stats_dtype)


def _module_forward(call: ModuleCall) -> Forward:
    """The user's module constructed as ``call`` says, its variables checked, as an apply function."""
    module = call.cls(**dict(call.fields))
    variables = _variable_shapes(module, call)
    _check_variables(call, variables)
    stats_dtype = variables["batch_stats"]["mean"].dtype if call.op == "bn" else None
    return Forward(module_apply(module, call.op), call.training, stats_dtype)


def _variable_shapes(module: Any, call: ModuleCall) -> dict[str, Any]:
    """The shapes and dtypes of the variables the module's own init creates for this input."""
    kwargs = {"use_running_average": True} if call.op == "bn" else {}
    x = jax.ShapeDtypeStruct(call.shape, JAX_DTYPES[call.dtype])

    def init(x_: jax.Array) -> Any:
        return module.init(jax.random.key(0), x_, **kwargs)

    try:
        variables = jax.eval_shape(init, x)
    except TRACING_ERRORS:
        variables = init(jnp.zeros(x.shape, x.dtype))
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), dict(variables))


def _names(collection: Iterable[str]) -> str:
    return ", ".join(repr(n) for n in collection) or "none"


def _check_variables(call: ModuleCall, variables: dict[str, Any]) -> None:
    """A clear TypeError where the module's variables are not the ones normcheck sets."""
    params = dict(variables.get("params", {}))
    layer = MODULE_NAMES[call.op]
    for name, shape in call.params:
        if name not in params:
            raise TypeError(
                f"{call.label} has no parameter {name!r} in its 'params' collection (it has {_names(params)}); "
                f"name them {' and '.join(map(repr, SCALE_AND_BIAS[: len(call.params)]))} as {layer} does"
            )
        got = tuple(params[name].shape)
        if got != shape:
            raise TypeError(f"{call.label}'s parameter {name!r} has shape {got}, expected {shape}")
    extra = [n for n in params if n not in dict(call.params)]
    if extra:
        given = ", ".join(f"{k}={v!r}" for k, v in call.fields if k in ("use_scale", "use_bias"))
        raise TypeError(
            f"{call.label}({given}) creates parameter(s) {_names(extra)} that normcheck cannot set; "
            f"it must create exactly {_names(dict(call.params))}"
        )
    if call.op == "bn":
        stats = dict(variables.get("batch_stats", {}))
        for name in ("mean", "var"):
            if name not in stats:
                raise TypeError(
                    f"{call.label} has no {name!r} in its 'batch_stats' collection (it has {_names(stats)}); "
                    f"keep the running statistics as 'mean' and 'var' as {layer} does"
                )
