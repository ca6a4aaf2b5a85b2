"""The norm layers of a Keras 3 model (or layer), nested models and layers included. Imports
keras; the worker imports this module only for Keras models."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from normcheck.model import candidates
from normcheck.model.records import BUILT_IN, FROZEN, OLD, PER_CALL, Findings, NormLayer, ParamSummary
from normcheck.model.stats import summarize, unread
from normcheck.names import OpName

FRAMEWORK = "tensorflow"  # normcheck's Keras is Keras 3 on TensorFlow (the registry's name)
OURS = "keras.src.layers.normalization."
ROOT_PATH = "(model)"
# keras.layers norm classes -> op; UnitNormalization, Normalization (preprocessing) and
# SpectralNormalization are not normalization layers of ours and are skipped
BUILT_INS: dict[str, OpName] = {
    "BatchNormalization": "bn",
    "LayerNormalization": "ln",
    "GroupNormalization": "gn",
    "RMSNormalization": "rms",
}
ROLES = {
    "gamma": "weight",
    "scale": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}


def _children(layer: Any) -> list[Any]:
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is not None:
        return list(flatten(include_self=False, recursive=False))
    return list(getattr(layer, "layers", []) or [])


def _layers(model: Any) -> list[tuple[str, Any]]:
    """(path, layer) for every layer inside the model, depth first, each once. A path joins the
    names of the layers that hold it ("head/ln"), the same whether the model was built in code or
    loaded from a .keras file (Keras's own ``layer.path`` differs between the two)."""
    out: list[tuple[str, Any]] = []
    seen: set[int] = set()

    def visit(layer: Any, path: str) -> None:
        if id(layer) in seen:
            return
        seen.add(id(layer))
        out.append((path, layer))
        for child in _children(layer):
            visit(child, f"{path}/{child.name}" if path else str(child.name))

    visit(model, "")
    return out


def _variable_summary(role: str, variable: Any, name: str) -> ParamSummary:
    dtype = str(getattr(variable, "dtype", "") or "") or None
    try:
        values = np.asarray(keras.ops.convert_to_numpy(variable))
    except Exception as e:
        shape = tuple(int(n) for n in variable.shape)
        return unread(role, name, shape, dtype, f"values not read ({type(e).__name__})")
    return summarize(role, name, values, dtype)


def _params(layer: Any, path: str) -> tuple[ParamSummary, ...]:
    """The layer's own weights, each named by the layer's path ("head/ln/gamma")."""
    out: list[ParamSummary] = []
    for variable in getattr(layer, "weights", []):
        short = str(variable.name).rsplit("/", 1)[-1].split(":")[0]
        role = ROLES.get(short) or candidates.PARAM_NAMES.get(short)
        if role is not None and all(p.role != role for p in out):
            name = short if path == ROOT_PATH else f"{path}/{short}"
            out.append(_variable_summary(role, variable, name))
    return tuple(out)


def _dtypes(layer: Any) -> tuple[str | None, str | None]:
    policy = getattr(layer, "dtype_policy", None)
    variable = getattr(policy, "variable_dtype", None) or getattr(layer, "dtype", None)
    compute = getattr(policy, "compute_dtype", None)
    return variable, compute if compute and compute != variable else None


def _axes(value: Any) -> tuple[int, ...] | None:
    if isinstance(value, int):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(a, int) for a in value):
        return tuple(value)
    return None


def _single_axis(value: Any) -> int | None:
    axes = _axes(value)
    return axes[0] if axes is not None and len(axes) == 1 else None


def inspect_keras(model: Any) -> Findings:
    found = Findings()
    for path, layer in _layers(model):
        cls = type(layer)
        name = cls.__name__
        path = path or ROOT_PATH
        if cls.__module__.startswith(OURS) and name in BUILT_INS:
            found.add(_builtin(layer, path, name, BUILT_INS[name]))
        elif not cls.__module__.startswith("keras.") and candidates.looks_like_norm(name):
            kind = f"{cls.__module__}.{cls.__qualname__}"
            found.add(
                candidates.candidate(path, kind, FRAMEWORK, name, candidates.eps_attribute(layer), _params(layer, path))
            )
    if any(note.startswith("not built") for layer in found.layers for note in layer.notes):
        found.note("some layers are not built yet (no input shape): their weights exist only after a first call")
    return found


def _builtin(layer: Any, path: str, name: str, op: OpName) -> NormLayer:
    config: dict[str, Any] = {}
    try:
        config = layer.get_config()
    except Exception:
        config = {}

    def get(key: str, default: Any = None) -> Any:
        """A setting from the layer's config, else a plain attribute (never a weight: RMSNormalization's
        ``scale`` is its weight, not a flag)."""
        if key in config:
            return config[key]
        value = getattr(layer, key, default)
        return value if isinstance(value, (bool, int, float, str, list, tuple, type(None))) else default

    params = _params(layer, path)
    dtype, compute = _dtypes(layer)
    notes: list[str] = []
    if not getattr(layer, "built", True):
        notes.append("not built: its weights are created by its first call")
    fields: dict[str, Any] = {}
    center, scale = bool(get("center", True)), bool(get("scale", True))
    kind = f"keras.layers.{name}"
    eps = get("epsilon")
    if op == "bn":
        momentum = get("momentum")
        trainable = bool(getattr(layer, "trainable", True))
        fields.update(
            channel_axis=_single_axis(get("axis")),
            running_stats=True,
            momentum=None if momentum is None else float(momentum),
            momentum_weights=OLD,
            mode=PER_CALL if trainable else FROZEN,
        )
        if not trainable:
            notes.append("trainable=False: always normalizes with the moving statistics, even with training=True")
        if get("synchronized"):
            notes.append("synchronized: in training, statistics run over every replica")
        if get("renorm"):
            notes.append("renorm=True: batch renormalization in training")
    elif op == "gn":
        groups = get("groups")
        fields.update(channel_axis=_single_axis(get("axis")))
        weight = next((p for p in params if p.role == "weight" and p.shape), None)
        channels = weight.shape[0] if weight is not None and weight.shape else None
        if groups == -1 or (groups is not None and groups == channels):
            # Keras's instance norm: groups=-1, which becomes the channel count once the layer is built
            op = "in"
            kind += "(groups=-1)"
            fields["groups"] = channels
            notes.append("a group per channel (groups=-1): instance norm")
        else:
            fields["groups"] = int(groups) if isinstance(groups, int) else None
    elif op == "ln":
        fields["axes"] = _axes(get("axis"))
        if get("rms_scaling"):
            op = "rms"
            kind += "(rms_scaling=True)"
            center = False
            notes.append(
                "rms_scaling=True: Keras divides x by sqrt(Var[x] + eps), the variance about the mean, "
                "not by the root mean square, and ignores center and beta"
            )
    else:  # RMSNormalization: a scale, no center
        fields["axes"] = _axes(get("axis"))
        center, scale = False, True
    weight_param = next((p for p in params if p.role == "weight"), None)
    if weight_param is not None and weight_param.shape is not None:
        fields.setdefault("feature_shape", weight_param.shape)
    return NormLayer(
        path=path,
        op=op,
        kind=kind,
        framework=FRAMEWORK,
        confirmed=True,
        basis=BUILT_IN,
        eps=None if eps is None else float(eps),
        weight=scale,
        bias=center,
        dtype=dtype,
        compute_dtype=compute,
        params=params,
        notes=tuple(notes),
        **fields,
    )
