"""The norm layers of a Flax model: a linen module with its variables, or an nnx module. Imports
flax and jax; the worker imports this module only for Flax models.

A linen module's submodules exist only while it runs: those its ``setup`` defines are found by
binding it to its variables; those a ``@compact`` method creates are found by running it on an
abstract input (``jax.eval_shape``, no computation) when an input shape is known, else by the
names Flax gives them in the variables (``BatchNorm_0``, ...), without their settings.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import nnx

from normcheck.model import candidates
from normcheck.model.records import (
    BUILT_IN,
    CANDIDATE,
    EVAL,
    OLD,
    ONE_PASS,
    PER_CALL,
    TRAIN,
    TWO_PASS,
    Findings,
    NormLayer,
    ParamSummary,
)
from normcheck.model.stats import summarize
from normcheck.names import OpName

FRAMEWORK = "jax"
BUILT_INS: dict[str, OpName] = {
    "BatchNorm": "bn",
    "LayerNorm": "ln",
    "GroupNorm": "gn",
    "RMSNorm": "rms",
    "InstanceNorm": "in",
}
LINEN, NNX = "flax.linen.normalization", "flax.nnx.nn.normalization"
AUTO_NAME = re.compile(r"^(?P<cls>BatchNorm|LayerNorm|GroupNorm|RMSNorm|InstanceNorm)_\d+$")
ROLES = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def _join(path: tuple[Any, ...]) -> str:
    return "/".join(str(p) for p in path) or "(model)"


def _dtype_name(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return str(np.dtype(value))
    except TypeError:
        return str(value)


def _axes(value: Any) -> tuple[int, ...] | None:
    if isinstance(value, int):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(a, int) for a in value):
        return tuple(value)
    return None


def _settings(
    module: Any, op: OpName, kind: str, path: str, params: tuple[ParamSummary, ...], nnx_module: bool
) -> NormLayer:
    """A built-in Flax norm layer's record from its fields (linen and nnx share their names)."""
    get = lambda name, default=None: getattr(module, name, default)
    notes: list[str] = []
    fields: dict[str, Any] = {}
    fast = get("use_fast_variance")
    if op != "rms" and isinstance(fast, bool):
        fields["variance"] = ONE_PASS if fast else TWO_PASS
        if fast:
            notes.append("use_fast_variance=True: the variance is E[x²] − E[x]² (use_fast_variance=False avoids it)")
    if op == "bn":
        running = get("use_running_average")
        momentum = get("momentum")
        axis = get("axis", -1)
        fields.update(
            channel_axis=axis if isinstance(axis, int) else None,
            running_stats=True,
            momentum=None if momentum is None else float(momentum),
            momentum_weights=OLD,
            mode=PER_CALL if running is None else (EVAL if running else TRAIN),
        )
        if running is None:
            notes.append("use_running_average is given at each call")
    elif op == "gn":
        groups, size = get("num_groups"), get("group_size")
        fields.update(groups=groups if isinstance(groups, int) else None, channel_axis=-1)
        if groups is None and isinstance(size, int):
            notes.append(f"group_size={size}: the group count is channels / {size}")
    elif op == "in":
        features = _axes(get("feature_axes", -1))
        fields.update(channel_axis=features[0] if features and len(features) == 1 else None)
    else:
        fields["axes"] = _axes(get("reduction_axes", -1))
    weight = next((p for p in params if p.role == "weight"), None)
    if weight is not None and weight.shape is not None:
        fields["feature_shape"] = weight.shape
    elif nnx_module and isinstance(get("num_features"), int):
        fields["feature_shape"] = (get("num_features"),)
    dtype = weight.dtype if weight is not None else _dtype_name(get("param_dtype"))
    compute = _dtype_name(get("dtype"))
    eps = get("epsilon")
    return NormLayer(
        path=path,
        op=op,
        kind=kind,
        framework=FRAMEWORK,
        confirmed=True,
        basis=BUILT_IN,
        eps=None if eps is None else float(eps),
        weight=bool(get("use_scale", True)),
        bias=bool(get("use_bias", True)) if op != "rms" else False,
        dtype=dtype,
        compute_dtype=compute if compute != dtype else None,
        params=params,
        notes=tuple(notes),
        **fields,
    )


# ---- linen ---------------------------------------------------------------------------------


def _subtree(variables: Mapping[str, Any], collection: str, path: tuple[str, ...]) -> Mapping[str, Any]:
    node: Any = variables.get(collection, {})
    for name in path:
        if not isinstance(node, Mapping) or name not in node:
            return {}
        node = node[name]
    return node if isinstance(node, Mapping) else {}


def _linen_params(variables: Mapping[str, Any], path: tuple[str, ...]) -> tuple[ParamSummary, ...]:
    out: list[ParamSummary] = []
    for collection in ("params", "batch_stats"):
        for key, value in _subtree(variables, collection, path).items():
            role = ROLES.get(key) or candidates.PARAM_NAMES.get(key)
            if role is not None and not isinstance(value, Mapping) and all(p.role != role for p in out):
                out.append(summarize(role, "/".join((collection, *path, key)), np.asarray(value)))
    return tuple(out)


def _linen_children(module: Any) -> Iterator[Any]:
    """The submodules a bound module holds (its fields and what its setup assigned)."""
    try:
        module._try_setup()
    except Exception:
        return
    for value in vars(module).values():
        items = value if isinstance(value, (list, tuple)) else value.values() if isinstance(value, dict) else [value]
        for item in items:
            if isinstance(item, nn.Module) and item.scope is not None:
                yield item


def _linen_record(module: Any, path: tuple[str, ...], variables: Mapping[str, Any]) -> NormLayer | None:
    cls = type(module)
    params = _linen_params(variables, path)
    if cls.__module__ == LINEN and cls.__name__ in BUILT_INS:
        return _settings(module, BUILT_INS[cls.__name__], f"flax.linen.{cls.__name__}", _join(path), params, False)
    if not cls.__module__.startswith("flax.") and candidates.looks_like_norm(cls.__name__):
        kind = f"{cls.__module__}.{cls.__qualname__}"
        return candidates.candidate(
            _join(path), kind, FRAMEWORK, cls.__name__, candidates.eps_attribute(module), params
        )
    return None


def inspect_linen(module: Any, variables: Mapping[str, Any], example: Any = None) -> Findings:
    found = Findings()
    if example is not None:
        try:
            _intercepted(module, variables, example, found)
        except Exception as e:  # its __call__ wants more than one input, or another dtype
            found.note(f"running the module on the example input failed ({type(e).__name__}): settings from setup only")
            example = None
    if example is None:
        bound = module.bind(variables)
        todo = [bound]
        while todo:
            m = todo.pop(0)
            path = tuple(m.path) if m.scope is not None else ()
            record = _linen_record(m, path, variables)
            if record is not None:
                found.add(record)
            todo[:0] = list(_linen_children(m))
    _by_name(variables, found)
    return found


def _intercepted(module: Any, variables: Mapping[str, Any], example: Any, found: Findings) -> None:
    """Run the module on an abstract input, noting every module that is called."""
    seen: list[tuple[tuple[str, ...], Any]] = []

    def note(f: Any, args: Any, kwargs: Any, ctx: Any) -> Any:
        if ctx.method_name == "__call__":
            seen.append((tuple(ctx.module.path), ctx.module))
        return f(*args, **kwargs)

    shape = tuple(example) if isinstance(example, (tuple, list)) else tuple(np.shape(example))
    dtype = getattr(example, "dtype", np.float32) if not isinstance(example, (tuple, list)) else np.float32
    x = jax.ShapeDtypeStruct(shape, dtype)
    with nn.intercept_methods(note):
        jax.eval_shape(lambda v, x: module.apply(v, x, mutable=True), variables, x)
    for path, m in seen:
        record = _linen_record(m, path, variables)
        if record is not None:
            found.add(record)


def _by_name(variables: Mapping[str, Any], found: Findings) -> None:
    """Variables of norm layers no module was found for: compact ones, named by Flax after their class."""

    def walk(node: Mapping[str, Any], path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        for key, value in node.items():
            if isinstance(value, Mapping):
                yield (*path, key)
                yield from walk(value, (*path, key))

    for path in walk(variables.get("params", {}), ()):
        match = AUTO_NAME.match(path[-1])
        if match is None or _join(path) in found.paths:
            continue
        cls = match["cls"]
        op = BUILT_INS[cls]
        params = _linen_params(variables, path)
        found.add(
            NormLayer(
                path=_join(path),
                op=op,
                kind=f"flax.linen.{cls}",
                framework=FRAMEWORK,
                confirmed=False,
                basis=CANDIDATE,
                weight=any(p.role == "weight" for p in params),
                bias=any(p.role == "bias" for p in params),
                running_stats=True if op == "bn" else None,
                dtype=params[0].dtype if params else None,
                params=params,
                notes=(
                    "a @compact submodule, found by its name: its settings (eps, momentum, axes) are known only "
                    "when the module runs on an input",
                ),
            )
        )


# ---- nnx -----------------------------------------------------------------------------------


def _nnx_value(variable: Any) -> Any:
    for get in (lambda v: v.get_value(), lambda v: v[...], lambda v: v.value):
        try:
            return np.asarray(get(variable))
        except Exception:
            continue
    return None


def _nnx_params(module: Any, path: str) -> tuple[ParamSummary, ...]:
    out: list[ParamSummary] = []
    for attr in ("scale", "bias", "mean", "var", *candidates.PARAM_NAMES):
        variable = getattr(module, attr, None)
        role = ROLES.get(attr) or candidates.PARAM_NAMES.get(attr)
        if not isinstance(variable, nnx.Variable) or role is None or any(p.role == role for p in out):
            continue
        values = _nnx_value(variable)
        if values is not None:
            out.append(summarize(role, f"{path}/{attr}" if path != "(model)" else attr, values))
    return tuple(out)


def inspect_nnx(model: Any) -> Findings:
    found = Findings()
    for raw_path, node in nnx.iter_graph(model):
        if not isinstance(node, nnx.Module):
            continue
        cls = type(node)
        path = _join(tuple(raw_path))
        if cls.__module__ == NNX and cls.__name__ in BUILT_INS:
            found.add(
                _settings(
                    node, BUILT_INS[cls.__name__], f"flax.nnx.{cls.__name__}", path, _nnx_params(node, path), True
                )
            )
        elif not cls.__module__.startswith("flax.") and candidates.looks_like_norm(cls.__name__):
            kind = f"{cls.__module__}.{cls.__qualname__}"
            found.add(
                candidates.candidate(
                    path, kind, FRAMEWORK, cls.__name__, candidates.eps_attribute(node), _nnx_params(node, path)
                )
            )
    return found
