"""JAX user implementations: pure functions with the signature of the torch.nn.functional op
(channels first), and flax.linen modules with the fields of the Flax layer (channels last).

Both run the whole case (training steps, forward, vjp) as one function through the JAX adapter's
machinery, under jax.jit when the code can be traced and op by op when it cannot.

Both also take the cases no JAX layer has built in, called as the PyTorch forms call them: a fused
residual add + norm (add_rms, add_ln; ``fn(x, residual, weight[, bias], eps)`` or
``module.apply(variables, x, residual)``, returning ``(output, residual_out)``) and DiT's adaptive
layer norm (adaln; ``fn(x, shift, scale, eps)`` or ``module.apply(variables, x, shift, scale)``,
bound by the parameters' names as normcheck.user.modulation says). A function also takes a
norm with FP8-quantized output (``--quantize``), called as the PyTorch function form calls it
(normcheck.frameworks.torch.quantized): ``fn(x, normalized_shape, weight[, bias], eps[, scale])``
returning ``(q, scale)``, or q alone with a static scale; inference only, no gradient. A function
also takes Weight Standardization (ws, ws_gn), called as the PyTorch function form calls it
(normcheck.frameworks.torch.ws): ``fn(x, weight, bias, padding=p, eps=e)`` on NCHW x and an OIHW
weight, for ws_gn followed by normcheck's own group norm.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from normcheck.conventions import Convention
from normcheck.frameworks import CONVENTIONS, FORMS
from normcheck.frameworks.base import Implementation, RunOutput, Unsupported, op_convention
from normcheck.frameworks.jax.adapter import (
    JAX_DTYPES,
    ApplyFn,
    Arrays,
    Compiled,
    Forward,
    add,
    case_function,
    check_layout,
    jax_device,
    module_apply,
    precision,
    put,
    run_case,
)
from normcheck.frameworks.jax.adapter import variables as case_variables
from normcheck.frameworks.jax.facts import FLAX_FIELDS, MODULE_NAMES, OPTIONAL_FIELDS, field_values
from normcheck.frameworks.quantized_result import ArrayKind, normalized_shape, quantized_arguments, quantized_outputs
from normcheck.names import CHANNELS_LAST, CONTIGUOUS, Layout
from normcheck.ops import FUSED_BASE, OPS
from normcheck.ops._op import required
from normcheck.ops.adaptive_layer_norm import ADALN, stray_affine
from normcheck.ops.fused_add import FUSED_ADD
from normcheck.ops.layer_norm import AXES, NOBIAS
from normcheck.ops.quantize import QUANTIZED
from normcheck.ops.rms_norm import GEMMA
from normcheck.ops.weight_standardization import GN_EPS, PAPER, WEIGHT_STANDARDIZATION, WS_GN, WS_OPS, conv_of
from normcheck.problem import Problem
from normcheck.user.modulation import MODULATION_ROLES, ModulationCall, bind_modulation
from normcheck.user.ws_forms import ws_keywords, ws_unsupported

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
    """The implementation of ``op`` by the user's ``obj`` in ``form`` (both forms have every op, the
    fused add + norm and adaLN included). BindingError for an adaLN whose parameters cannot take
    (x, shift, scale): a usage error at load."""
    convention = op_convention(CONVENTIONS[FORMS[form].conventions_of], op)
    if form == "jax_function":
        if op in WS_OPS:
            if not callable(obj):
                raise TypeError(f"the jax_function form takes a function, not a {type(obj).__name__}")
            return WSFunction(op, obj, name, omit_defaults, convention)
        if op in FUSED_BASE:
            return FusedFunction(op, obj, name, omit_defaults, convention)
        if op == ADALN:
            return ModulationFunction(op, obj, name, omit_defaults, convention)
        return FunctionImplementation(op, obj, name, omit_defaults, convention)
    if form == "flax_module":
        if op in WS_OPS:
            return WSModule(op, obj, name, omit_defaults, convention)
        if op in FUSED_BASE:
            return FusedModule(op, obj, name, omit_defaults, convention)
        if op == ADALN:
            return ModulationModule(op, obj, name, omit_defaults, convention)
        return ModuleImplementation(op, obj, name, omit_defaults, convention)
    raise ValueError(f"the jax forms have no form {form!r}")


class JitOrEager:
    """A case function under jax.jit; op by op from the first time it cannot be traced."""

    def __init__(self, run: Callable[..., tuple]) -> None:
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
        self.base = FUSED_BASE.get(op, op)  # the norm it applies: a fused op's, any other op itself
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

    extensions = frozenset({GEMMA, NOBIAS, QUANTIZED})

    def run(self, problem: Problem, layout: str, device: str) -> RunOutput:
        if problem.params.quant is None:
            return super().run(problem, layout, device)
        check_layout(self, problem.shape, layout)  # FP8 output: inference, no training step
        with precision(problem.dtype):
            return _run_quantized(_quantized_case(self.quantized_call(problem)), problem, device)

    def quantized_call(self, problem: Problem) -> QuantizedCall:
        """How a quantized case calls the function (the module docstring of normcheck.frameworks.torch.quantized)."""
        return QuantizedCall(
            fn=self.obj,
            label=self.label,
            op=self.op,
            normalized_shape=normalized_shape(problem),
            eps=problem.eps,
            static=problem.quant_scale is not None,
        )

    def quantized_apply(self, problem: Problem) -> QuantizedApply:
        """apply(params, x, scale) -> what the function returns on a quantized case, not compiled
        (what bench times; scale None for a dynamic one)."""
        return _quantized_apply(self.quantized_call(problem))

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


# -- FP8-quantized output (--quantize): the PyTorch function form's call ----------------------

QUANTIZED_RETURNS = "(q, scale): q the FP8 array, scale its float32 scale (q alone with a static scale)"
# params ("scale", "bias"), x, the static scale (None for a dynamic one) -> what the function returned
QuantizedApply = Callable[[Arrays, jax.Array, Any], Any]


@dataclass(frozen=True)
class QuantizedCall:
    """How a quantized case calls the user's function, all but the arrays (the compile cache key)."""

    fn: Callable
    label: str
    op: str
    normalized_shape: tuple[int, ...]
    eps: float
    static: bool  # the scale is given, last


def _quantized_apply(call: QuantizedCall) -> QuantizedApply:
    """The function called as every form calls it (quantized_result.quantized_arguments)."""

    def apply(params: Arrays, x: jax.Array, scale: Any) -> Any:
        weight, bias, given = params.get("scale"), params.get("bias"), scale if call.static else None
        return call.fn(*quantized_arguments(call.op, x, call.normalized_shape, weight, bias, call.eps, given))

    return apply


@functools.lru_cache(maxsize=64)
def _quantized_case(call: QuantizedCall) -> JitOrEager:
    """run(params, x, scale) -> what the function returned, under jax.jit where it traces."""
    return JitOrEager(_quantized_apply(call))


def static_scale(problem: Problem, device: jax.Device) -> jax.Array | None:
    """The case's static scale as a float32 array of shape (), or None for a dynamic one."""
    if problem.quant_scale is None:
        return None
    return jax.device_put(np.asarray(problem.quant_scale, dtype=np.float32).reshape(()), device)


def _run_quantized(case: JitOrEager, problem: Problem, device: str) -> RunOutput:
    """A quantized case through ``case``: x in the case dtype, the weight and bias, the static scale."""
    dev = jax_device(device)
    params, _ = case_variables(problem, None, dev)
    x = put(problem.x, JAX_DTYPES[problem.dtype], dev)
    return _quantized_outputs(case(params, x, static_scale(problem, dev)), problem)


def _is_array(v: Any) -> bool:
    return isinstance(v, jax.Array | np.ndarray | np.generic)


def _describe(a: Any) -> str:
    return f"a {a.dtype} array of shape {tuple(a.shape)}"


QUANTIZED_ARRAYS = ArrayKind(_is_array, _describe, add, QUANTIZED_RETURNS)


def _quantized_outputs(result: Any, problem: Problem) -> RunOutput:
    """The checks "quantized" and "scale" from what the code returned (normcheck.frameworks.quantized_result)."""
    return quantized_outputs(result, problem.quant_scale is not None, QUANTIZED_ARRAYS)


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
    weight and bias, batch norm's running statistics in batch_stats "mean"/"var".

    On a quantized case (``--quantize``) it is constructed the same way (RMSNorm's or LayerNorm's
    fields) and called as the PyTorch module form calls its module
    (normcheck.frameworks.torch.quantized): ``module.apply(variables, x)``, or
    ``module.apply(variables, x, scale)`` with a static scale (float32, shape ()), returning
    ``(q, scale)`` as the function form does (q alone allowed with a static scale)."""

    # constructed as the Flax layer: Gemma's stored weight set as is (the module adds the 1), layer
    # norm without bias as use_bias=False, over any axes as reduction_axes = feature_axes
    extensions = frozenset({QUANTIZED, GEMMA, NOBIAS, AXES})

    def layouts(self, shape: tuple[int, ...]) -> tuple[Layout, ...]:
        if self.base in ("ln", "rms") or len(shape) == 2:  # trailing axes, or both layouts are one
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
        for name, default in FLAX_FIELDS[self.base].items():
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
        names = SCALE_AND_BIAS[: 1 if self.base == "rms" or p.variant == NOBIAS else 2] if p.affine else ()
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

    def run(self, problem: Problem, layout: str, device: str) -> RunOutput:
        if problem.params.quant is None:
            return super().run(problem, layout, device)
        check_layout(self, problem.shape, layout)  # FP8 output: inference, no training step
        with precision(problem.dtype):
            case = _quantized_module_case(self.call(problem, layout), problem.quant_scale is not None)
            return _run_quantized(case, problem, device)

    def quantized_apply(self, problem: Problem) -> QuantizedApply:
        """apply(params, x, scale) -> what the module returns on a quantized case, not compiled
        (what bench times; scale None for a dynamic one)."""
        call = self.call(problem, self.layouts(problem.shape)[0])
        return _quantized_module_apply(call, problem.quant_scale is not None)

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


@functools.lru_cache(maxsize=64)
def _quantized_module_case(call: ModuleCall, static: bool) -> JitOrEager:
    return JitOrEager(_quantized_module_apply(call, static))


def _quantized_module_apply(call: ModuleCall, static: bool) -> QuantizedApply:
    """The quantized module ``call`` constructs, its variables checked, as apply(params, x, scale)."""
    module = call.cls(**dict(call.fields))
    _check_variables(call, _variable_shapes(module, call, static))

    def apply(params: Arrays, x: jax.Array, scale: Any) -> Any:
        args = (x,) if not static else (x, scale)
        return module.apply({"params": params}, *args)

    return apply


def _variable_shapes(module: Any, call: ModuleCall, static: bool = False) -> dict[str, Any]:
    """The shapes and dtypes of the variables the module's own init creates for this input (and,
    ``static``, a static FP8 scale after it)."""
    kwargs = {"use_running_average": True} if call.op == "bn" else {}
    x = jax.ShapeDtypeStruct(call.shape, JAX_DTYPES[call.dtype])
    inputs = (x, x) if call.op in FUSED_BASE else (x,)  # a fused add + norm is called with x and the residual
    if static:
        inputs += (jax.ShapeDtypeStruct((), jnp.float32),)
    return _init_shapes(module, inputs, **kwargs)


def _init_shapes(module: Any, inputs: tuple[jax.ShapeDtypeStruct, ...], **kwargs: Any) -> dict[str, Any]:
    """The shapes and dtypes of the variables ``module.init`` creates for inputs of these shapes."""

    def init(*args: jax.Array) -> Any:
        return module.init(jax.random.key(0), *args, **kwargs)

    try:
        shapes = jax.eval_shape(init, *inputs)
    except TRACING_ERRORS:
        shapes = init(*(jnp.zeros(a.shape, a.dtype) for a in inputs))
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), dict(shapes))


def _names(collection: Iterable[str]) -> str:
    return ", ".join(repr(n) for n in collection) or "none"


def _check_variables(call: ModuleCall, variables: dict[str, Any]) -> None:
    """A clear TypeError where the module's variables are not the ones normcheck sets."""
    params = dict(variables.get("params", {}))
    layer = MODULE_NAMES[FUSED_BASE.get(call.op, call.op)]
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


# -- the cases no JAX layer has built in: fused add + norm, adaLN --------------------------------

# bench times these through their own forward (fused_apply, modulation_forward), not apply_fn's
NO_PLAIN_FORWARD = "a JAX {what} has no plain forward (y from x alone)"


def _outputs(label: str, out: Any, count: int, what: str) -> tuple[jax.Array, ...]:
    """The arrays a user's fused add + norm (two) or adaLN (one) returned, or a clear TypeError."""
    arrays = tuple(out) if isinstance(out, tuple | list) else (out,)
    if len(arrays) != count or not all(hasattr(a, "shape") and hasattr(a, "dtype") for a in arrays):
        if isinstance(out, tuple | list):
            got = f"a {type(out).__name__} of {len(out)}"
        else:
            got = "one array" if hasattr(out, "shape") else type(out).__name__
        raise TypeError(f"{label} must return {what}; it returned {got}")
    return arrays


def _pull(outs: tuple[jax.Array, ...], pullback: Callable, upstream: tuple[jax.Array, ...]) -> Any:
    """``pullback`` of the upstream gradients, each in its output's dtype (as autograd casts them)."""
    return pullback(tuple(g.astype(o.dtype) for o, g in zip(outs, upstream, strict=True)))


# a fused add + norm returns two arrays
FUSED_RESULT = "(output, residual_out), two arrays: the normalized x + residual and x + residual itself"
# forward(params, x, residual) -> what the user's code returned
FusedApply = Callable[[Arrays, jax.Array, jax.Array], Any]


def fused_outputs(apply: FusedApply, label: str) -> Callable[[Arrays, jax.Array, jax.Array], tuple[jax.Array, ...]]:
    """forward(params, x, residual) -> (y, h), the two arrays checked (a clear TypeError otherwise)."""
    return lambda params, x, residual: _outputs(label, apply(params, x, residual), 2, FUSED_RESULT)


def _fused_case(apply: FusedApply, label: str) -> JitOrEager:
    """run(params, x, residual, dy, dresidual) -> ((y, h), dx, dresidual, dparams): both outputs
    and the vjp of both, dy the normalized output's upstream gradient, dresidual the residual
    output's (normcheck.ops.fused_add)."""
    outputs = fused_outputs(apply, label)

    def run(params: Arrays, x: jax.Array, residual: jax.Array, dy: jax.Array, dresidual: jax.Array) -> tuple:
        def forward(x_: jax.Array, r_: jax.Array, p_: Arrays) -> tuple[jax.Array, ...]:
            return outputs(p_, x_, r_)

        outs, pullback = jax.vjp(forward, x, residual, params)
        dx, dr, dparams = _pull(outs, pullback, (dy, dresidual))
        return outs, dx, dr, dparams

    return JitOrEager(run)


def _run_fused(case: JitOrEager, problem: Problem, device: str) -> RunOutput:
    """A fused add + norm case through ``case`` (``_fused_case``): the same outputs as the torch
    adapter's ``_run_fused``, the weight's and bias's gradients where the case has them."""
    dev = jax_device(device)
    dtype = JAX_DTYPES[problem.dtype]
    residual, dresidual = problem.fused_inputs()
    params, _ = case_variables(problem, None, dev)
    arrays = (put(a, dtype, dev) for a in (problem.x, residual, problem.dy, dresidual))
    (y, h), dx, dr, dparams = case(params, *arrays)
    out = RunOutput()
    add(out, "forward", y)
    add(out, "residual_out", h)
    add(out, "grad_input", dx)
    add(out, "grad_residual", dr)
    for check, name in (("grad_weight", "scale"), ("grad_bias", "bias")):
        if name in params:
            add(out, check, dparams[name])
    return out


@dataclass(frozen=True)
class FusedCall:
    """How a case calls a fused add + norm function, all but the arrays (the compile cache key)."""

    fn: Callable
    label: str
    op: str
    eps: float
    weight_shape: tuple[int, ...]  # the ones given when the case has no weight
    dtype: str


class FusedFunction(UserImplementation):
    """A fused residual add + norm as PyTorch's function form calls it (torch forms' ``fused_call``):
    ``fn(x, residual, weight, eps)`` (add_rms) or ``fn(x, residual, weight, bias, eps)`` (add_ln),
    all positional, eps always given, weight ones where the case has none (collecting no gradient),
    bias None where it has none; returns ``(output, residual_out)``, residual_out = x + residual
    in the input dtype. The variants are the function's to compute (Gemma's 1 + weight)."""

    extensions = frozenset({FUSED_ADD, GEMMA, NOBIAS})

    def fused_call(self, problem: Problem) -> FusedCall:
        return FusedCall(
            self.obj,
            self.label,
            self.op,
            problem.eps,
            tuple(OPS[self.op].param_shape(problem.shape, problem.params)),
            problem.dtype,
        )

    def run(self, problem: Problem, layout: str, device: str) -> RunOutput:
        check_layout(self, problem.shape, layout)
        with precision(problem.dtype):
            return _run_fused(_fused_function_case(self.fused_call(problem)), problem, device)

    def fused_apply(self, problem: Problem, layout: str) -> FusedApply:
        """apply(params, x, residual) -> what the function returns, not compiled (what bench times)."""
        check_layout(self, problem.shape, layout)
        return _fused_function_apply(self.fused_call(problem))

    def apply_fn(self, problem: Problem, layout: str) -> Forward:
        raise Unsupported(NO_PLAIN_FORWARD.format(what="fused add + norm"))


@functools.lru_cache(maxsize=64)
def _fused_function_case(call: FusedCall) -> JitOrEager:
    return _fused_case(_fused_function_apply(call), call.label)


def _fused_function_apply(call: FusedCall) -> FusedApply:
    def apply(params: Arrays, x: jax.Array, residual: jax.Array) -> Any:
        weight = params.get("scale")
        if weight is None:  # a fused kernel always takes a weight
            weight = jnp.ones(call.weight_shape, JAX_DTYPES[call.dtype])
        if call.op == "add_rms":
            return call.fn(x, residual, weight, call.eps)
        return call.fn(x, residual, weight, params.get("bias"), call.eps)

    return apply


class FusedModule(ModuleImplementation):
    """A fused residual add + norm module: constructed with the fields of the Flax layer of its norm
    (RMSNorm's for add_rms, LayerNorm's for add_ln), params "scale" (and "bias") set to the case's
    weight and bias, called as ``module.apply(variables, x, residual)`` (vLLM's
    ``RMSNorm.forward(x, residual)``) and returning ``(output, residual_out)``."""

    extensions = frozenset({FUSED_ADD})

    def run(self, problem: Problem, layout: str, device: str) -> RunOutput:
        check_layout(self, problem.shape, layout)
        with precision(problem.dtype):
            return _run_fused(_fused_module_case(self.call(problem, layout)), problem, device)

    def fused_apply(self, problem: Problem, layout: str) -> FusedApply:
        """apply(params, x, residual) -> what the module returns, not compiled (what bench times)."""
        check_layout(self, problem.shape, layout)
        return _fused_module_apply(self.call(problem, layout))

    def apply_fn(self, problem: Problem, layout: str) -> Forward:
        raise Unsupported(NO_PLAIN_FORWARD.format(what="fused add + norm"))


@functools.lru_cache(maxsize=64)
def _fused_module_case(call: ModuleCall) -> JitOrEager:
    return _fused_case(_fused_module_apply(call), call.label)


def _fused_module_apply(call: ModuleCall) -> FusedApply:
    """The module ``call`` constructs, its variables checked, as apply(params, x, residual)."""
    module = call.cls(**dict(call.fields))
    _check_variables(call, _variable_shapes(module, call))

    def apply(params: Arrays, x: jax.Array, residual: jax.Array) -> Any:
        return module.apply({"params": params}, x, residual)

    return apply


# -- adaLN: y = LN(x) * (1 + scale) + shift, x (N, T, D), shift and scale (N, D) --------------

ADALN_RESULT = "the output array alone"


# forward(x, shift, scale, *const) -> (y,): the user's adaLN, const its module's variables (if any)
ModulationForward = Callable[..., tuple[jax.Array, ...]]


def _modulation_forward(call: ModulationCall, fn: Callable, eps: float | None) -> ModulationForward:
    """forward(x, shift, scale, *const) -> (y,), ``fn(*const)`` the callable ``call`` is applied
    to (a module's apply, given its variables)."""

    def forward(x: jax.Array, shift: jax.Array, scale: jax.Array, *const: Any) -> tuple[jax.Array, ...]:
        return _outputs(call.label, call.call(fn(*const), x, shift, scale, eps), 1, ADALN_RESULT)

    return forward


def _modulation_case(forward: ModulationForward) -> JitOrEager:
    """run(x, shift, scale, dy, *const) -> (y, dx, dshift, dscale) of ``forward`` (``_modulation_forward``)."""

    def run(x: jax.Array, shift: jax.Array, scale: jax.Array, dy: jax.Array, *const: Any) -> tuple:
        def on(x_: jax.Array, shift_: jax.Array, scale_: jax.Array) -> tuple[jax.Array, ...]:
            return forward(x_, shift_, scale_, *const)

        outs, pullback = jax.vjp(on, x, shift, scale)
        dx, dshift, dscale = _pull(outs, pullback, (dy,))
        return outs[0], dx, dshift, dscale

    return JitOrEager(run)


def _run_modulation(case: JitOrEager, problem: Problem, device: str, *const: Any) -> RunOutput:
    """An adaLN case through ``case`` (``_modulation_case``): scale is the case's weight and shift
    its bias, so their gradients are grad_weight and grad_bias (reported as grad_scale and
    grad_shift), as the torch forms give them."""
    if problem.weight is None or problem.bias is None:
        raise ValueError("an adaptive layer norm case has a shift and a scale")
    dev = jax_device(device)
    dtype = JAX_DTYPES[problem.dtype]
    x, shift, scale, dy = (put(a, dtype, dev) for a in (problem.x, problem.bias, problem.weight, problem.dy))
    y, dx, dshift, dscale = case(x, shift, scale, dy, *const)
    out = RunOutput()
    add(out, "forward", y)
    add(out, "grad_input", dx)
    add(out, "grad_weight", dscale)
    add(out, "grad_bias", dshift)
    return out


class ModulationFunction(UserImplementation):
    """adaLN as a function, ``fn(x, shift, scale, eps)`` bound by its parameters' names
    (normcheck.user.modulation, as the torch form's ModulationFunction), always given eps where it
    takes one (the defaults call style: DiT's 1e-6)."""

    def __init__(self, op: str, obj: Any, name: str, omit_defaults: bool, convention: Convention) -> None:
        super().__init__(op, obj, name, omit_defaults, convention)
        self.modulation = bind_modulation(obj, self.label)  # BindingError here: a usage error at load

    def unsupported(self, problem: Problem, layout: str) -> str | None:
        if not self.omit and not self.modulation.takes_eps:
            return f"{self.label} takes no eps parameter: its own eps is checked in the defaults call style only"
        return None

    def run(self, problem: Problem, layout: str, device: str) -> RunOutput:
        check_layout(self, problem.shape, layout)
        with precision(problem.dtype):
            return _run_modulation(_modulation_function_case(self.obj, self.label, problem.eps), problem, device)

    def modulation_forward(self, problem: Problem) -> tuple[ModulationForward, tuple]:
        """(forward(x, shift, scale) -> (y,), not compiled, and the host arrays it takes after them:
        none for a function) - what bench times."""
        return _modulation_forward(self.modulation, lambda: self.obj, problem.eps), ()

    def apply_fn(self, problem: Problem, layout: str) -> Forward:
        raise Unsupported(NO_PLAIN_FORWARD.format(what="adaptive layer norm"))


@functools.lru_cache(maxsize=64)
def _modulation_function_case(fn: Callable, label: str, eps: float) -> JitOrEager:
    return _modulation_case(_modulation_forward(bind_modulation(fn, label), lambda: fn, eps))


# The fields an adaLN module may declare for the width D (DiT's ``hidden_size``): given D when
# it declares one, as the torch form gives ``cls(D)``.
WIDTH_FIELDS = ("hidden_size", "features", "num_features", "dim", "width", "embed_dim")
# A module's own (D,) parameters, which adaLN's layer norm has none of, by their last name
STRAY = {"scale": 0, "weight": 0, "gamma": 0, "bias": 1, "beta": 1}


@dataclass(frozen=True)
class ModulationModuleCall:
    """How a case constructs an adaLN module, all but the arrays (the compile cache key)."""

    cls: type
    label: str
    fields: tuple[tuple[str, Any], ...]
    shape: tuple[int, ...]
    dtype: str


class ModulationModule(UserImplementation):
    """adaLN as a flax.linen module: constructed with its eps field (``epsilon`` or ``eps``, left out
    in the defaults call style) and, where it declares one, a width field (``hidden_size``...) of
    D; called as ``module.apply(variables, x, shift, scale)``, bound by the names of its
    ``__call__``. Its own (D,) scale/weight and bias, which adaLN's layer norm has none of, are
    set to ``stray_affine``'s values, so a layer norm's affine left in shows; its other variables
    keep the values its init gives them."""

    def __init__(self, op: str, obj: Any, name: str, omit_defaults: bool, convention: Convention) -> None:
        super().__init__(op, obj, name, omit_defaults, convention)
        if not isinstance(obj, type):
            raise TypeError(f"the flax_module form takes a flax.linen.Module subclass, not a {type(obj).__name__}")
        declared = [f.name for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj) else []
        self.eps_field = next((n for n in declared if n.lower() in MODULATION_ROLES["eps"]), None)
        self.width_field = next((n for n in declared if n in WIDTH_FIELDS), None)
        # BindingError here: a usage error at load (the first positional parameter, self, left out)
        self.modulation = bind_modulation(functools.partial(obj.__call__, None), self.label + ".__call__")

    def unsupported(self, problem: Problem, layout: str) -> str | None:
        if not self.omit and self.eps_field is None:
            return f"{self.label} has no eps field: its own eps is checked in the defaults call style only"
        return None

    def call(self, problem: Problem) -> ModulationModuleCall:
        fields: dict[str, Any] = {}
        if self.width_field is not None:
            fields[self.width_field] = problem.shape[-1]
        if not self.omit and self.eps_field is not None:
            fields[self.eps_field] = problem.eps
        return ModulationModuleCall(self.obj, self.label, tuple(fields.items()), problem.shape, problem.dtype)

    def run(self, problem: Problem, layout: str, device: str) -> RunOutput:
        check_layout(self, problem.shape, layout)
        with precision(problem.dtype):
            case, host = _modulation_module_case(self.call(problem))
            dev = jax_device(device)
            return _run_modulation(case, problem, device, jax.device_put(host, dev))

    def modulation_forward(self, problem: Problem) -> tuple[ModulationForward, tuple]:
        """(forward(x, shift, scale, variables) -> (y,), not compiled, and (variables,) on the
        host) - what bench times."""
        forward, host = _modulation_module_forward(self.call(problem))
        return forward, (host,)

    def apply_fn(self, problem: Problem, layout: str) -> Forward:
        raise Unsupported(NO_PLAIN_FORWARD.format(what="adaptive layer norm"))


@functools.lru_cache(maxsize=64)
def _modulation_module_case(call: ModulationModuleCall) -> tuple[JitOrEager, Any]:
    """The case function of the module ``call`` constructs, and its variables on the host."""
    forward, host = _modulation_module_forward(call)
    return _modulation_case(forward), host


@functools.lru_cache(maxsize=64)
def _modulation_module_forward(call: ModulationModuleCall) -> tuple[ModulationForward, Any]:
    """The forward of the module ``call`` constructs, and its variables on the host: its init's,
    its own (D,) affine parameters set to ``stray_affine``'s values."""
    module = call.cls(**dict(call.fields))
    if not isinstance(module, nn.Module):
        raise TypeError(f"{call.label}(...) returned a {type(module).__name__}, not a flax.linen.Module")
    binding = bind_modulation(functools.partial(call.cls.__call__, None), call.label + ".__call__")
    n, _, width = call.shape
    dtype = JAX_DTYPES[call.dtype]
    x = jnp.zeros(call.shape, dtype)
    rows = jnp.zeros((n, width), dtype)
    args, kwargs = binding.arguments(x, rows, rows, None)
    initial = jax.device_get(module.init(jax.random.key(0), *args, **kwargs))
    stray = stray_affine(width, call.dtype)

    def set_stray(path: tuple, a: Any) -> Any:
        kind = STRAY.get(str(getattr(path[-1], "key", "")).lower()) if path else None
        if path and getattr(path[0], "key", None) == "params" and kind is not None and a.shape == (width,):
            return stray[kind].astype(dtype)
        return a

    host = jax.tree_util.tree_map_with_path(set_stray, dict(initial))

    def apply(variables_: Any) -> Callable:
        return lambda *a, **k: module.apply(variables_, *a, **k)

    return _modulation_forward(binding, apply, None), host


# -- Weight Standardization: fn(x, weight, bias, padding=p, eps=e), as the torch function form, --
# -- and an nn.Conv subclass constructed as nn.Conv is ------------------------------------------

HWIO = (2, 3, 1, 0)  # (O, I, kh, kw) -> (kh, kw, I, O): Flax's kernel layout
OIHW = (3, 2, 0, 1)  # and back
WS_RESULT = "the convolution's output array alone"
# the case's arrays collecting a gradient, by Problem attribute, and their checks: "weight" always,
# the others where the case has them
WS_LEAVES = (
    ("weight", "grad_weight"),
    ("bias", "grad_bias"),
    ("gn_weight", "grad_gn_weight"),
    ("gn_bias", "grad_gn_bias"),
)
# conv(x, weight, bias) -> what the user's convolution returned (bias None where the case has none)
WSConv = Callable[[jax.Array, jax.Array, Any], Any]
# forward(x, leaves) -> (y,): a ws case's forward, leaves keyed as WS_LEAVES
WSForward = Callable[[jax.Array, Arrays], tuple[jax.Array, ...]]


@dataclass(frozen=True)
class WSCall:
    """How a ws or ws_gn case calls the user's function, all but the arrays (the compile cache key)."""

    fn: Callable
    label: str
    kwargs: tuple[tuple[str, Any], ...]  # padding (or pad) and eps (or epsilon), where given
    groups: int | None  # ws_gn's group norm's G; None for ws


class WSFunction(UserImplementation):
    """Weight Standardization as a function, called as the PyTorch function form calls it
    (normcheck.frameworks.torch.ws): ``fn(x, weight, bias, padding=p, eps=e)`` with x (N, C, H, W)
    and the raw weight (O, C, kh, kw) positionally (``bias`` None where the case has none),
    ``padding`` (or ``pad``) and ``eps`` (or ``epsilon``) by keyword where it takes them; the
    function does its own layout handling (``jax.lax.conv_general_dilated`` with
    ``("NCHW", "OIHW", "NCHW")``). For ws_gn it is followed by normcheck's own group norm with the
    case's affine (eps 1e-5, in float32 for half dtypes as PyTorch's CPU kernel computes it).
    Gradients by jax.vjp w.r.t. x, the raw weight, the bias and the group norm's affine. It
    traces under ``jax.default_matmul_precision("highest")``: float32 convolutions in float32 on
    a GPU (XLA's default there rounds their operands to TF32), as the torch forms set cuDNN's."""

    extensions = frozenset({WEIGHT_STANDARDIZATION, PAPER})  # the user's code computes its convention

    def unsupported(self, problem: Problem, layout: str) -> str | None:
        return ws_unsupported(self.obj, problem.params, self.omit)

    def call(self, problem: Problem) -> WSCall:
        kwargs = ws_keywords(self.obj, problem.params, problem.eps, self.omit)
        return WSCall(self.obj, self.label, tuple(kwargs.items()), _ws_groups(problem))

    def run(self, problem: Problem, layout: str, device: str) -> RunOutput:
        check_layout(self, problem.shape, layout)
        with precision(problem.dtype):
            return _run_ws(_ws_function_case(self.call(problem)), problem, device, layout)

    def ws_forward(self, problem: Problem) -> WSForward:
        """forward(x, leaves) -> (y,), not compiled (what bench times)."""
        return _ws_function_forward(self.call(problem))

    def apply_fn(self, problem: Problem, layout: str) -> Forward:
        raise Unsupported(NO_PLAIN_FORWARD.format(what="weight standardization"))


def _ws_groups(problem: Problem) -> int | None:
    return required(problem.params.groups, "groups") if problem.op == WS_GN else None


@functools.lru_cache(maxsize=64)
def _ws_function_case(call: WSCall) -> JitOrEager:
    return _ws_case(_ws_function_forward(call))


def _ws_function_forward(call: WSCall) -> WSForward:
    kwargs = dict(call.kwargs)
    return _ws_forward(lambda x, w, b: call.fn(x, w, b, **kwargs), call.label, call.groups, CONTIGUOUS)


@dataclass(frozen=True)
class WSModuleCall:
    """How a ws or ws_gn case constructs the user's convolution module (the compile cache key)."""

    cls: type
    label: str
    fields: tuple[tuple[str, Any], ...]  # features, kernel_size, padding, use_bias, eps where given
    shape: tuple[int, ...]  # x's, (N, H, W, C)
    dtype: str
    groups: int | None  # ws_gn's group norm's G; None for ws


class WSModule(UserImplementation):
    """Weight Standardization as a flax.linen module: an ``nn.Conv`` subclass standardizing its
    kernel (BiT's bit_jax ``StandardizedConv``), constructed as ``nn.Conv`` is,
    ``cls(features=O, kernel_size=(k, k), padding=((p, p), (p, p)), use_bias=..., eps=...)``
    (``eps`` or ``epsilon`` where it declares one, in the explicit call style); its params
    "kernel" (kh, kw, C, O) (the case's weight transposed) and "bias" set to the case's, then
    ``module.apply(variables, x)`` on channels-last x. For ws_gn normcheck's own group norm
    follows, as for ``WSFunction``; gradients by jax.vjp w.r.t. x, the raw kernel (reported in
    the case's (O, C, kh, kw)), the bias and the group norm's affine, traced under
    ``jax.default_matmul_precision("highest")``."""

    extensions = frozenset({WEIGHT_STANDARDIZATION, PAPER})

    def __init__(self, op: str, obj: Any, name: str, omit_defaults: bool, convention: Convention) -> None:
        super().__init__(op, obj, name, omit_defaults, convention)
        if not isinstance(obj, type):
            raise TypeError(f"the flax_module form takes a flax.linen.Conv subclass, not a {type(obj).__name__}")

    def layouts(self, shape: tuple[int, ...]) -> tuple[Layout, ...]:
        return (CHANNELS_LAST,)  # Flax's own: x (N, H, W, C), the kernel (kh, kw, C, O)

    def unsupported(self, problem: Problem, layout: str) -> str | None:
        return ws_unsupported(self.obj, problem.params, self.omit, padding=False)  # nn.Conv takes its padding

    def call(self, problem: Problem) -> WSModuleCall:
        o, k, pad = conv_of(problem.params)
        fields: dict[str, Any] = {
            "features": o,
            "kernel_size": (k, k),
            "padding": ((pad, pad), (pad, pad)),
            "use_bias": problem.bias is not None,
            **ws_keywords(self.obj, problem.params, problem.eps, self.omit, padding=False),
        }
        n, c, *spatial = problem.shape
        shape = (n, *spatial, c)
        return WSModuleCall(self.obj, self.label, tuple(fields.items()), shape, problem.dtype, _ws_groups(problem))

    def run(self, problem: Problem, layout: str, device: str) -> RunOutput:
        check_layout(self, problem.shape, layout)
        with precision(problem.dtype):
            return _run_ws(_ws_module_case(self.call(problem)), problem, device, layout)

    def ws_forward(self, problem: Problem) -> WSForward:
        """forward(x, leaves) -> (y,) on channels-last x and the kernel, not compiled (what bench times)."""
        return _ws_module_forward(self.call(problem))

    def apply_fn(self, problem: Problem, layout: str) -> Forward:
        raise Unsupported(NO_PLAIN_FORWARD.format(what="weight standardization"))


@functools.lru_cache(maxsize=64)
def _ws_module_case(call: WSModuleCall) -> JitOrEager:
    return _ws_case(_ws_module_forward(call))


def _ws_module_forward(call: WSModuleCall) -> WSForward:
    """The module ``call`` constructs, its params checked, as forward(x, leaves) -> (y,)."""
    fields = dict(call.fields)
    try:
        module = call.cls(**fields)
    except TypeError as e:
        given = ", ".join(f"{k}={v!r}" for k, v in fields.items())
        raise TypeError(f"{call.label}({given}) failed ({e}): it is constructed as flax.linen.Conv is") from e
    if not isinstance(module, nn.Module):
        raise TypeError(f"{call.label}(...) returned a {type(module).__name__}, not a flax.linen.Module")
    _check_conv_params(call, module)

    def conv(x: jax.Array, kernel: jax.Array, bias: Any) -> Any:
        params = {"kernel": kernel} if bias is None else {"kernel": kernel, "bias": bias}
        return module.apply({"params": params}, x)

    return _ws_forward(conv, call.label, call.groups, CHANNELS_LAST)


def _check_conv_params(call: WSModuleCall, module: nn.Module) -> None:
    """A clear TypeError where the module's variables are not nn.Conv's "kernel" (and "bias")."""
    fields = dict(call.fields)
    o, c = fields["features"], call.shape[-1]
    want = {"kernel": (*fields["kernel_size"], c, o)}
    if fields["use_bias"]:
        want["bias"] = (o,)
    variables = _init_shapes(module, (jax.ShapeDtypeStruct(call.shape, JAX_DTYPES[call.dtype]),))
    got = {name: tuple(a.shape) for name, a in dict(variables.get("params", {})).items()}
    others = [name for name in variables if name != "params"]
    if got != want or others:
        have = ", ".join(f"{name!r} {shape}" for name, shape in got.items()) or "none"
        also = f" and the collection(s) {_names(others)}" if others else ""
        expected = ", ".join(f"{name!r} {shape}" for name, shape in want.items())
        raise TypeError(f"{call.label} has the params {have}{also}; normcheck sets nn.Conv's {expected}, no others")


def _group_norm(y: jax.Array, groups: int, weight: Any, bias: Any, layout: str = CONTIGUOUS) -> jax.Array:
    """torch.nn.functional.group_norm(y, groups, weight, bias, eps=GN_EPS) on (N, C, H, W) y, or
    on (N, H, W, C) y in the channels-last layout: the statistics in float32 for half dtypes
    (PyTorch's CPU kernel's accumulate type), the output in y's dtype."""
    compute = jnp.float32 if y.dtype in (jnp.float16, jnp.bfloat16) else y.dtype
    last = layout == CHANNELS_LAST
    n, c = y.shape[0], y.shape[-1 if last else 1]
    g = y.astype(compute).reshape((n, -1, groups, c // groups) if last else (n, groups, -1))
    axes = (1, 3) if last else (2,)
    mean = g.mean(axis=axes, keepdims=True)
    var = jnp.square(g - mean).mean(axis=axes, keepdims=True)
    out = ((g - mean) * jax.lax.rsqrt(var + GN_EPS)).reshape(y.shape)
    shape = (1,) * (y.ndim - 1) + (c,) if last else (1, c) + (1,) * (y.ndim - 2)
    if weight is not None:
        out = out * weight.astype(compute).reshape(shape)
    if bias is not None:
        out = out + bias.astype(compute).reshape(shape)
    return out.astype(y.dtype)


def _ws_forward(conv: WSConv, label: str, groups: int | None, layout: str) -> WSForward:
    """forward(x, leaves) -> (y,): the user's convolution (traced at float32 precision, see
    ``WSFunction``), then ws_gn's group norm."""

    def forward(x: jax.Array, leaves: Arrays) -> tuple[jax.Array, ...]:
        with jax.default_matmul_precision("highest"):
            y = _outputs(label, conv(x, leaves["weight"], leaves.get("bias")), 1, WS_RESULT)[0]
        if groups is not None:
            y = _group_norm(y, groups, leaves.get("gn_weight"), leaves.get("gn_bias"), layout)
        return (y,)

    return forward


def _ws_case(forward: WSForward) -> JitOrEager:
    """run(x, leaves, dy) -> (y, dx, dleaves): ``forward`` and its vjp."""

    def run(x: jax.Array, leaves: Arrays, dy: jax.Array) -> tuple:
        outs, pullback = jax.vjp(forward, x, leaves)
        dx, dleaves = _pull(outs, pullback, (dy,))
        return outs[0], dx, dleaves

    return JitOrEager(run)


def ws_inputs(problem: Problem, device: jax.Device, layout: str) -> tuple[jax.Array, Arrays, jax.Array]:
    """x, the leaves (WS_LEAVES: the raw weight, as the (kh, kw, C, O) kernel in the channels-last
    layout) and dy of a ws or ws_gn case on ``device``, in ``layout``."""
    dtype = JAX_DTYPES[problem.dtype]
    given = {name: getattr(problem, name) for name, _ in WS_LEAVES}
    if given["weight"] is None:
        raise ValueError("a weight-standardization case has a weight")
    if layout == CHANNELS_LAST:
        given["weight"] = np.transpose(given["weight"], HWIO)
    leaves = {name: put(a, dtype, device) for name, a in given.items() if a is not None}
    return put(problem.x, dtype, device, layout), leaves, put(problem.dy, dtype, device, layout)


def _run_ws(case: JitOrEager, problem: Problem, device: str, layout: str) -> RunOutput:
    """A ws or ws_gn case through ``case`` (``_ws_case``): the checks of normcheck.reference_ws,
    as the torch adapter gives them, in the canonical layout."""
    x, leaves, dy = ws_inputs(problem, jax_device(device), layout)
    y, dx, dleaves = case(x, leaves, dy)
    out = RunOutput()
    add(out, "forward", y, layout)
    add(out, "grad_input", dx, layout)
    for name, check in WS_LEAVES:
        if name not in dleaves:
            continue
        if name == "weight" and layout == CHANNELS_LAST:
            kernel = np.asarray(jax.device_get(dleaves[name]))
            out.add(check, np.transpose(kernel, OIHW).astype(np.float64), str(kernel.dtype))
        else:
            add(out, check, dleaves[name])
    return out
