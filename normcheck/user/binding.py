"""Binding a user's function to a case by its parameters' names.

A function whose signature is not its framework's functional one (``def group_norm(x, gamma,
beta, G, eps=1e-5)``, ``def ln(hidden_states, gamma, beta, variance_epsilon)``) is called with
each parameter given by the role its name says (``ROLES``), in every framework's function form:
raw TensorFlow functions always, PyTorch and JAX functions when their first two parameters are
not the ``torch.nn.functional`` op's (or when ``--layout``/``--param-shape`` ask for something
F's signature cannot mean). This module is the one place that knows the names; it imports no
framework and works on whatever array type the form passes.

Layout: for batch, instance and group norm ``x`` is channels-first (N, C, ...) with ``nchw`` and
channels-last (N, ..., C) with ``nhwc``; layer and RMS norm normalize the trailing axes of x as
given, whatever the layout. Parameters are (C,) (layer/RMS norm: ``normalized_shape``) with
``--param-shape flat`` (the default), and broadcastable against x with ``broadcast``:
(1, C, 1, 1) in nchw, (1, 1, 1, C) in nhwc.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from normcheck.conventions import Convention
from normcheck.frameworks.base import Implementation
from normcheck.ops import OPS
from normcheck.problem import Problem

NCHW, NHWC = "nchw", "nhwc"
LAYOUTS = (NCHW, NHWC)
FLAT, BROADCAST = "flat", "broadcast"
PARAM_SHAPES = (FLAT, BROADCAST)
# the layout a function of each form is written for when --layout is not given
DEFAULT_LAYOUTS = {"tf_function": NHWC, "torch_function": NCHW, "jax_function": NCHW}
CHANNEL_OPS = ("bn", "in", "gn")

# role -> the parameter names that take it (exact first, then case-insensitively where unambiguous)
ROLES: dict[str, tuple[str, ...]] = {
    "input": ("x", "input", "inputs", "hidden_states", "h"),
    "weight": ("weight", "gamma", "scale", "g", "w"),
    "bias": ("bias", "beta", "offset", "b"),
    "groups": ("groups", "G", "num_groups", "group", "num_group"),
    "eps": ("eps", "epsilon", "variance_epsilon", "var_epsilon"),
    "shape": ("normalized_shape", "axis", "axes", "dim"),
    "running_mean": ("running_mean", "moving_mean", "mean"),
    "running_var": ("running_var", "moving_variance", "var"),
    "momentum": ("momentum",),
    "training": ("training", "is_training", "train", "use_input_stats"),
}
ROLE_TITLES = {
    "input": "input",
    "weight": "weight",
    "bias": "bias",
    "groups": "groups",
    "eps": "eps",
    "shape": "normalized shape / axis",
    "running_mean": "running mean",
    "running_var": "running variance",
    "momentum": "momentum",
    "training": "training flag",
}
# the roles each op can give, and those a function of it must take
OP_ROLES: dict[str, tuple[str, ...]] = {
    "gn": ("input", "weight", "bias", "groups", "eps", "shape"),
    "ln": ("input", "weight", "bias", "eps", "shape"),
    "rms": ("input", "weight", "eps", "shape"),
    "bn": ("input", "weight", "bias", "eps", "shape", "running_mean", "running_var", "momentum", "training"),
    "in": ("input", "weight", "bias", "eps", "shape", "running_mean", "running_var", "momentum", "training"),
}
REQUIRED_ROLES: dict[str, tuple[str, ...]] = {"gn": ("input", "groups")}
# the torch.nn.functional op's parameters, in order, and the role of each
F_PARAMS: dict[str, tuple[str, ...]] = {
    "gn": ("input", "num_groups", "weight", "bias", "eps"),
    "ln": ("input", "normalized_shape", "weight", "bias", "eps"),
    "rms": ("input", "normalized_shape", "weight", "eps"),
    "bn": ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"),
    "in": ("input", "running_mean", "running_var", "weight", "bias", "use_input_stats", "momentum", "eps"),
}
F_ROLES = {
    "input": "input",
    "num_groups": "groups",
    "normalized_shape": "shape",
    "weight": "weight",
    "bias": "bias",
    "eps": "eps",
    "running_mean": "running_mean",
    "running_var": "running_var",
    "training": "training",
    "use_input_stats": "training",
    "momentum": "momentum",
}
F_DEFAULT_TRAINING = {"bn": False, "in": True}  # F.batch_norm's training, F.instance_norm's use_input_stats
VARIABLE_MAKERS = ("get_variable", "Variable", "add_weight", "model_variable")

_EXACT = {name: role for role, names in ROLES.items() for name in names}
_LOWER: dict[str, str | None] = {}
for _name, _role in _EXACT.items():
    _LOWER[_name.lower()] = None if _LOWER.get(_name.lower(), _role) != _role else _role


class BindingError(ValueError):
    """A signature normcheck cannot call by name: one line for a usage error (exit 2)."""


def role_of(name: str) -> str | None:
    """The role a parameter named ``name`` takes: exact names first, then case-insensitively
    (``G`` is groups and ``g`` a weight; ``Training`` is the training flag)."""
    return _EXACT.get(name) or _LOWER.get(name.lower())


def accepted_names(roles: tuple[str, ...]) -> str:
    return "; ".join(f"{ROLE_TITLES[r]}: {', '.join(ROLES[r])}" for r in roles)


def python_function(fn: Any) -> Any:
    """The Python function behind a tf.function (or functools.wraps wrapper)."""
    return getattr(fn, "python_function", fn)


def signature(fn: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(python_function(fn))
    except (TypeError, ValueError):
        return None


def takes(fn: Any, names: tuple[str, ...]) -> str | None:
    """The first of ``names`` that ``fn`` (a function, or a class: its constructor) takes by
    keyword, the first of all when it takes ``**kwargs``; None when it takes none of them."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None
    for name in names:
        if name in params and params[name].kind != inspect.Parameter.POSITIONAL_ONLY:
            return name
    if any(q.kind == inspect.Parameter.VAR_KEYWORD for q in params.values()):
        return names[0]
    return None


def takes_functional_signature(fn: Any, op: str) -> bool:
    """Whether ``fn`` is called as the torch.nn.functional op: its signature cannot be read, it
    takes ``*args``, or its first two parameters have the roles of F's first two."""
    sig = signature(fn)
    if sig is None or op not in F_PARAMS:  # a fused add + norm has one signature (torch forms' fused_call)
        return True
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = [p for p in sig.parameters.values() if p.kind in kinds]
    if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in sig.parameters.values()):
        return True
    want = [F_ROLES[n] for n in F_PARAMS[op][:2]]
    if len(params) < 2:
        return False
    return [role_of(p.name) for p in params[:2]] == want or [p.name for p in params[:2]] == list(F_PARAMS[op][:2])


def takes_functional_arguments(fn: Any, op: str) -> bool:
    """Whether ``fn``, which its names cannot bind (two name the same role, or one is missing),
    can take the torch.nn.functional op's arguments by position: as many positional parameters
    as F's, each named for some role (``lambda x, g, w, b, eps`` for group norm). A name with no
    role at all (``dropout_rate``) says the function is not F's."""
    sig = signature(fn)
    if sig is None or op not in F_PARAMS:
        return True
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = [p for p in sig.parameters.values() if p.kind in kinds]
    if any(role_of(p.name) is None for p in params):
        return False
    return len(params) >= len(F_PARAMS[op])


def creates_variables(fn: Any) -> str | None:
    """The variable-making name a function's own code uses (TF1's ``get_variable``, ...), or None."""
    code = getattr(python_function(fn), "__code__", None)
    if code is None:
        return None
    names: set[str] = set()
    stack = [code]
    while stack:
        c = stack.pop()
        names.update(c.co_names)
        stack.extend(k for k in c.co_consts if inspect.iscode(k))
    return next((n for n in VARIABLE_MAKERS if n in names), None)


def creates_variables_message(label: str, how: str) -> str:
    return (
        f"{label} creates its own variables ({how}), so normcheck cannot set its gamma and beta to the "
        "case's values; check it as a keras.layers.Layer subclass that creates them in build() "
        "(--impl FILE:Class), or make gamma and beta parameters of the function"
    )


@dataclass(frozen=True)
class Param:
    name: str
    role: str
    required: bool
    default: Any
    positional_only: bool


@dataclass(frozen=True)
class Binding:
    """Which of the function's parameters takes each role; how to call it with role values."""

    label: str
    op: str
    params: tuple[Param, ...]  # the bound ones, in the signature's order

    def param(self, role: str) -> Param | None:
        return next((p for p in self.params if p.role == role), None)

    def has(self, role: str) -> bool:
        return self.param(role) is not None

    def required(self, role: str) -> bool:
        p = self.param(role)
        return p is not None and p.required

    def declared(self, role: str) -> Any:
        """The default the function declares for ``role`` (None: none, or no such parameter)."""
        p = self.param(role)
        return None if p is None or p.required else p.default

    def arguments(self, values: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """(args, kwargs) giving each bound role in ``values``; positional-only parameters
        positionally (an omitted one before a given one gets its declared default)."""
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        pending: list[Any] = []
        for p in self.params:
            if p.positional_only:
                if p.role in values:
                    args += [*pending, values[p.role]]
                    pending = []
                elif p.required:
                    raise TypeError(f"{self.label}: no value for its parameter {p.name!r}")
                else:
                    pending.append(p.default)
            elif p.role in values:
                kwargs[p.name] = values[p.role]
        return args, kwargs


def bind(fn: Any, op: str, label: str) -> Binding:
    """The Binding of ``fn`` for ``op``; BindingError (one line) where it cannot be called by name."""
    sig = signature(fn)
    if sig is None:
        raise BindingError(f"cannot read the signature of {label}, so normcheck cannot call it by name")
    relevant = OP_ROLES[op]
    bound: list[Param] = []
    unknown: list[str] = []
    taken: dict[str, str] = {}
    duplicate: list[str] = []
    for p in sig.parameters.values():
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue  # *args and **kwargs take nothing by name
        role = role_of(p.name)
        required = p.default is inspect.Parameter.empty
        if role is None or role not in relevant:
            if required:
                unknown.append(p.name)
            continue
        if role in taken:
            duplicate.append(f"{taken[role]!r} and {p.name!r} both name the {ROLE_TITLES[role]}")
            continue
        taken[role] = p.name
        bound.append(Param(p.name, role, required, None if required else p.default, p.kind == p.POSITIONAL_ONLY))
    missing = [r for r in REQUIRED_ROLES.get(op, ("input",)) if r not in taken]
    if unknown or missing or duplicate:
        parts = []
        if unknown:
            parts.append(f"parameter(s) {', '.join(repr(n) for n in unknown)} match no role")
        if missing:
            parts.append(f"no parameter for the {', '.join(ROLE_TITLES[r] for r in missing)}")
        parts += duplicate
        raise BindingError(
            f"cannot call {label}{sig} by name for {op}: {'; '.join(parts)}; accepted names (case-insensitive "
            f"where unambiguous) are {accepted_names(relevant)}"
        )
    return Binding(label, op, tuple(bound))


# -- what a case gives each role ----------------------------------------------------------


def channel_axis(layout: str) -> int:
    return -1 if layout == NHWC else 1


def shape_value(name: str, op: str, normalized: tuple[int, ...], layout: str) -> Any:
    """The value of the normalized-shape parameter named ``name``: layer/RMS norm's
    ``normalized_shape`` (sizes) or its trailing axes; for channel ops, the channel axis."""
    if op in CHANNEL_OPS:
        axis = channel_axis(layout)
        return [axis] if name.lower() == "axes" else axis
    if name.lower() == "normalized_shape":
        return tuple(normalized)
    axes = tuple(range(-len(normalized), 0))
    if name.lower() == "axes":
        return list(axes)
    return axes[0] if len(axes) == 1 else axes


def param_view(op: str, ndim: int, layout: str, param_shape: str, size: tuple[int, ...]) -> tuple[int, ...] | None:
    """The shape the affine parameters are given in: None for as they are ((C,), normalized_shape)."""
    if param_shape == FLAT or op not in CHANNEL_OPS or ndim <= 2:
        return None
    view = [1] * ndim
    view[channel_axis(layout)] = size[0]
    return tuple(view)


@dataclass(frozen=True)
class BoundFunction:
    """A user function bound by name for one op, with the layout and parameter shape asked for.

    The form calls it through ``values`` (role values of a case, in the framework's arrays) and
    ``arguments``; ``problem`` says which cases it can express."""

    fn: Any
    binding: Binding
    layout: str
    param_shape: str
    omit_defaults: bool

    @property
    def label(self) -> str:
        return self.binding.label

    @property
    def op(self) -> str:
        return self.binding.op

    def channels_last(self, ndim: int) -> bool:
        return self.op in CHANNEL_OPS and self.layout == NHWC and ndim > 2

    def problem(self, problem: Problem) -> str | None:
        """Why the case cannot be expressed in this function's parameters (a skip), or None."""
        b, p, label = self.binding, problem.params, self.label
        if problem.quant_scale is not None:  # normcheck.frameworks.torch.quantized passes it by position
            return f"{label} is called by its parameters' names, none of which takes a static scale"
        if p.affine and not b.has("weight"):
            return f"{label} takes no weight parameter: checked without affine parameters only"
        if p.affine and OPS[self.op].has_bias(p) and not b.has("bias"):
            return f"{label} takes no bias parameter: checked without affine parameters only"
        if not p.affine and (b.required("weight") or b.required("bias")):
            return f"{label} requires gamma and beta: checked with affine parameters only"
        if p.running_stats and not b.has("running_mean") and p.mode == "eval":
            return f"{label} takes no running statistics, so it has no evaluation mode that uses them"
        if not p.running_stats and (b.required("running_mean") or b.required("running_var")):
            return f"{label} requires running statistics: checked with them only"
        if not p.input_stats and not b.has("training"):
            return f"{label} takes no training flag: checked in training mode only"
        if not self.omit_defaults and not b.has("eps"):
            return f"{label} takes no eps parameter: its own eps is checked in the defaults call style only"
        k = p.normalized_ndim
        if self.op in ("ln", "rms") and k is not None and k > 1 and not b.has("shape"):
            return f"{label} takes no normalized_shape/axis parameter: checked over the last axis only"
        return None

    def missing_checks(self, problem: Problem) -> dict[str, str]:
        """Checks the function's parameters cannot take part in: the running statistics of a
        function without them, or without a momentum when one is given."""
        if not problem.params.running_stats:
            return {}
        running = ("running_mean", "running_var")
        if not self.binding.has("running_mean") or not self.binding.has("running_var"):
            return dict.fromkeys(running, f"{self.label} takes no running statistics")
        if not self.omit_defaults and not self.binding.has("momentum"):
            return dict.fromkeys(running, f"{self.label} takes no momentum parameter")
        return {}

    def values(
        self,
        x: Any,
        problem: Problem,
        weight: Any,
        bias: Any,
        running_mean: Any,
        running_var: Any,
        training: bool,
        framework_momentum: float | None,
        reshape: Callable[[Any, tuple[int, ...]], Any],
    ) -> dict[str, Any]:
        """The role values of a case, x already in the function's layout; the defaults call
        style leaves out each optional argument the function declares a default for."""
        p, b = problem.params, self.binding
        k = p.normalized_ndim if self.op in ("ln", "rms") else None
        normalized = tuple(problem.shape[len(problem.shape) - k :]) if k else ()
        view = param_view(self.op, len(problem.shape), self.layout, self.param_shape, problem.shape[1:2])
        shape_param = b.param("shape")
        values: dict[str, Any] = {"input": x}
        optional: dict[str, Any] = {"eps": problem.eps, "weight": weight, "bias": bias}
        if view is not None:
            optional.update(
                {r: None if v is None else reshape(v, view) for r, v in (("weight", weight), ("bias", bias))}
            )
        if self.op == "gn":
            values["groups"] = p.groups
        if shape_param is not None:
            values["shape"] = shape_value(shape_param.name, self.op, normalized, self.layout)
        if running_mean is not None:
            optional.update(running_mean=running_mean, running_var=running_var)
            if framework_momentum is not None:
                optional["momentum"] = framework_momentum
        if self.op in ("bn", "in"):
            optional["training"] = training
        for role, value in optional.items():
            if not b.has(role):
                continue
            if value is None and not b.required(role):
                continue  # weight/bias absent: leave the function's own default
            if self.omit_defaults and not b.required(role) and role in ("eps", "momentum"):
                continue  # its declared default must apply
            if self.omit_defaults and role == "training" and not b.required(role) and b.declared(role) == training:
                continue
            values[role] = value
        return values

    def call(self, values: Mapping[str, Any]) -> Any:
        args, kwargs = self.binding.arguments(values)
        return self.fn(*args, **kwargs)


def declared_settings(bound: BoundFunction, conv: Convention) -> tuple[float | None, float | None]:
    """(eps, momentum in PyTorch's meaning) the defaults call style expects: the function's declared
    defaults where it declares numbers, else None (the form's framework's defaults)."""
    b = bound.binding
    eps = b.declared("eps")
    momentum = b.declared("momentum")
    eps_value = float(eps) if isinstance(eps, int | float) and not isinstance(eps, bool) and eps > 0 else None
    new_weight = None
    if conv.momentum_weights is not None and isinstance(momentum, int | float) and not isinstance(momentum, bool):
        new_weight = conv.to_framework_momentum(float(momentum))
    return eps_value, new_weight


def restrict(impl: Implementation, bound: BoundFunction) -> Implementation:
    """``impl`` skipping the cases ``bound`` cannot express and leaving out the checks it cannot
    take part in, on top of its own."""
    own_unsupported, own_missing = impl.unsupported, impl.missing_checks

    def unsupported(problem: Problem, layout: str) -> str | None:
        return bound.problem(problem) or own_unsupported(problem, layout)

    def missing_checks(problem: Problem) -> dict[str, str]:
        return {**own_missing(problem), **bound.missing_checks(problem)}

    impl.unsupported = unsupported  # type: ignore[method-assign]
    impl.missing_checks = missing_checks  # type: ignore[method-assign]
    return impl


# -- torch and JAX: a function bound by name behind the torch.nn.functional signature ----------


def _moved(x: Any, perm: tuple[int, ...]) -> Any:
    """``x`` with its axes permuted: torch tensors by ``permute``, NumPy/JAX arrays by ``transpose``."""
    permute = getattr(x, "permute", None)
    return permute(*perm) if permute is not None else x.transpose(perm)


def _reshaped(a: Any, shape: tuple[int, ...]) -> Any:
    return a.reshape(shape)


class FunctionalAdapter:
    """The user's function bound by name, callable as the torch.nn.functional op is by the torch
    and JAX function forms: arguments as F's, x channels-first, parameters (C,). Hashable by
    identity (the JAX form caches compiled cases by the function)."""

    def __init__(self, bound: BoundFunction, conv: Convention) -> None:
        self.bound, self.conv = bound, conv
        self.__name__ = self.__qualname__ = bound.label

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        bound, op = self.bound, self.bound.op
        given = dict(zip(F_PARAMS[op], args, strict=False))
        given.update(kwargs)
        roles = {F_ROLES[k]: v for k, v in given.items() if k in F_ROLES}
        x = roles["input"]
        ndim = len(x.shape)
        last = bound.channels_last(ndim)
        if last:
            x = _moved(x, (0, *range(2, ndim), 1))
        b = bound.binding
        view = param_view(op, ndim, bound.layout, bound.param_shape, (x.shape[-1] if last else x.shape[1],))
        values: dict[str, Any] = {"input": x}
        if "groups" in roles:
            values["groups"] = roles["groups"]
        shape_param = b.param("shape")
        if shape_param is not None:
            normalized = tuple(roles.get("shape") or ())
            values["shape"] = shape_value(shape_param.name, op, normalized, bound.layout)
        for role in ("weight", "bias"):
            v = roles.get(role)
            if v is not None and b.has(role):
                values[role] = v if view is None else _reshaped(v, view)
        if roles.get("running_mean") is not None and b.has("running_mean"):
            values.update(running_mean=roles["running_mean"], running_var=roles["running_var"])
        if "training" in roles or op in F_DEFAULT_TRAINING:
            training = roles.get("training", F_DEFAULT_TRAINING.get(op))
            keep = not bound.omit_defaults or b.required("training") or b.declared("training") != training
            if b.has("training") and keep:
                values["training"] = training
        for role in ("eps", "momentum"):
            if role in roles and b.has(role):
                values[role] = roles[role]
            elif b.required(role):  # the defaults call style: the framework's default, given explicitly
                values[role] = self._default(role, x)
        out = bound.call(values)
        if not last:
            return out
        back = (0, ndim - 1, *range(1, ndim - 1))
        if isinstance(out, tuple | list):
            return type(out)([_moved(out[0], back), *out[1:]])
        return _moved(out, back)

    def _default(self, role: str, x: Any) -> float:
        if role == "momentum":
            return self.conv.to_framework_momentum(self.conv.default_new_weight)
        dtype = getattr(x.dtype, "name", None) or str(x.dtype).rpartition(".")[2]
        return self.conv.default_eps(dtype)
