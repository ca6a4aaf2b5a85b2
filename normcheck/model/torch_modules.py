"""The norm layers of a torch.nn.Module tree: an eager module, or a TorchScript one (scripted or
traced) loaded from a .pt file. Imports torch; the worker imports this module only for torch
models."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import torch

from normcheck.model import candidates
from normcheck.model.records import (
    BUILT_IN,
    CANDIDATE,
    CUMULATIVE,
    EVAL,
    MACHINE_EPS,
    NEW,
    TRAIN,
    Findings,
    NormLayer,
    ParamSummary,
)
from normcheck.model.stats import summarize, unread
from normcheck.names import OpName

FRAMEWORK = "torch"
ROOT_PATH = "(model)"  # the path shown for the model itself, when it is a norm layer
# torch.nn's norm layers: class name -> op. Its other "Norm" classes (LocalResponseNorm,
# CrossMapLRN2d) are not normalization layers of ours and are skipped.
BUILT_INS: dict[str, OpName] = {
    **dict.fromkeys(("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm"), "bn"),
    **dict.fromkeys(("LazyBatchNorm1d", "LazyBatchNorm2d", "LazyBatchNorm3d"), "bn"),
    **dict.fromkeys(("InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"), "in"),
    **dict.fromkeys(("LazyInstanceNorm1d", "LazyInstanceNorm2d", "LazyInstanceNorm3d"), "in"),
    "LayerNorm": "ln",
    "GroupNorm": "gn",
    "RMSNorm": "rms",
}
TORCH_NN = "torch.nn.modules."
# the aten call a traced TorchScript module makes, whose constants hold what its attributes no longer do
ATEN_CALLS = {
    "aten::batch_norm",
    "aten::instance_norm",
    "aten::group_norm",
    "aten::layer_norm",
    "aten::rms_norm",
}
_MANGLE = re.compile(r"(^__torch__\.|___torch_mangle_\d+\.)")


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def tensor_summary(role: str, name: str, t: Any) -> ParamSummary | None:
    """A parameter's or buffer's summary; None for a missing one."""
    if t is None or not isinstance(t, torch.Tensor):
        return None
    if isinstance(t, torch.nn.parameter.UninitializedTensorMixin):
        return unread(role, name, None, None, "uninitialized: a lazy module's shapes come with its first call")
    shape = tuple(int(n) for n in t.shape)
    if t.device.type == "meta":
        return unread(role, name, shape, _dtype(t), "on the meta device: no values")
    try:
        values = t.detach().to("cpu", torch.float64).numpy()
    except Exception as e:  # quantized, sparse or otherwise unreadable
        return unread(role, name, shape, _dtype(t), f"values not read ({type(e).__name__})")
    return summarize(role, name, values, _dtype(t))


def _class_of(module: torch.nn.Module) -> tuple[str, str]:
    """(defining module, class name); a TorchScript module's are read from its compiled type."""
    if isinstance(module, torch.jit.ScriptModule):
        try:
            qualified = _MANGLE.sub("", module._c._type().qualified_name())
            where, _, name = qualified.rpartition(".")
            return where, name
        except Exception:
            return "", str(getattr(module, "original_name", type(module).__name__))
    cls = type(module)
    return cls.__module__, cls.__qualname__


def _builtin_base(module: torch.nn.Module) -> str | None:
    """The torch.nn norm class an eager user class derives from, if any."""
    for cls in type(module).__mro__[1:]:
        if cls.__module__.startswith(TORCH_NN) and cls.__name__ in BUILT_INS:
            return cls.__name__
    return None


def _graph_args(module: torch.nn.Module) -> dict[str, Any]:
    """A traced module's norm call's constant arguments, by the aten schema's names."""
    graph = getattr(module, "graph", None)
    if graph is None:
        return {}
    try:
        for node in graph.nodes():
            if node.kind() not in ATEN_CALLS:
                continue
            names = [a.name for a in node.schema_args()] if hasattr(node, "schema_args") else _schema_names(node)
            out = {}
            for arg_name, value in zip(names, node.inputs(), strict=False):
                out[arg_name] = _constant(value)
            return out
    except Exception:
        return {}
    return {}


def _schema_names(node: Any) -> list[str]:
    schema = node.schema()  # "aten::layer_norm(Tensor input, SymInt[] normalized_shape, ...) -> Tensor"
    inner = schema[schema.index("(") + 1 : schema.rindex(") ->")]
    names = []
    for part in inner.split(","):
        words = part.strip().split("=")[0].split()
        if len(words) >= 2:
            names.append(words[-1])
    return names


def _constant(value: Any) -> Any:
    node = value.node()
    if node.kind() == "prim::ListConstruct":
        return [_constant(v) for v in node.inputs()]
    try:
        v = value.toIValue()
    except Exception:
        return None
    return None if isinstance(v, torch.Tensor) else v


class _Config:
    """A module's settings: its attributes (eager and scripted), else its traced graph's constants."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.graph: dict[str, Any] | None = None

    def get(self, name: str, graph_name: str | None = None) -> Any:
        try:
            return getattr(self.module, name)
        except AttributeError:
            pass
        if self.graph is None:
            self.graph = _graph_args(self.module)
        return self.graph.get(graph_name or name)

    @property
    def traced(self) -> bool:
        return bool(self.graph)


def _own(module: torch.nn.Module, name: str) -> Any:
    """A parameter or buffer of the module itself (None when it is absent or None)."""
    params = dict(module.named_parameters(recurse=False))
    if name in params:
        return params[name]
    buffers = dict(module.named_buffers(recurse=False))
    return buffers.get(name)


def _params(module: torch.nn.Module, prefix: str, roles: dict[str, str]) -> tuple[ParamSummary, ...]:
    out: list[ParamSummary] = []
    for attr, role in roles.items():
        summary = tensor_summary(role, f"{prefix}{attr}", _own(module, attr))
        if summary is not None and all(p.role != role for p in out):
            out.append(summary)
    return tuple(out)


STANDARD = {"weight": "weight", "bias": "bias", "running_mean": "running_mean", "running_var": "running_var"}


def _rank_axes(class_name: str, op: OpName) -> tuple[int, ...] | None:
    """The statistics' axes a BatchNormNd/InstanceNormNd class fixes (BatchNorm1d takes two ranks)."""
    n = next((int(c) for c in class_name if c.isdigit()), None)
    if n is None:
        return None
    if op == "bn":
        return None if n == 1 else (0, *range(2, n + 2))
    return tuple(range(-n, 0))


def builtin_record(
    module: torch.nn.Module, path: str, class_name: str, op: OpName, prefix: str, kind: str
) -> NormLayer:
    cfg = _Config(module)
    weight, bias = _own(module, "weight"), _own(module, "bias")
    params = _params(module, prefix, STANDARD)
    first = next((p for p in (weight, bias, _own(module, "running_mean")) if isinstance(p, torch.Tensor)), None)
    dtype = _dtype(first) if first is not None else None
    notes: list[str] = []
    lazy = class_name.startswith("Lazy")
    if lazy:
        notes.append("lazy module: its feature sizes and parameters are set by its first call")
    fields: dict[str, Any] = {}
    if op in ("bn", "in"):
        running = _own(module, "running_mean") is not None
        momentum = cfg.get("momentum")
        fields.update(
            channel_axis=1,
            axes=_rank_axes(class_name, op),
            running_stats=running,
            momentum=None if momentum is None else float(momentum),
            momentum_weights=(NEW if momentum is not None else CUMULATIVE) if running else None,
        )
        num = cfg.get("num_features")
        if isinstance(num, int) and num > 0:
            fields["feature_shape"] = (num,)
        training = cfg.get("training")
        graph_training = cfg.graph.get("training") if cfg.traced and cfg.graph else None
        if isinstance(graph_training, bool):
            training = graph_training
            notes.append("traced: the mode is fixed in the graph")
        if op == "bn":
            fields["mode"] = TRAIN if training else EVAL
            if not running:
                notes.append("no running statistics: normalizes with the batch's statistics in eval mode too")
            if class_name == "SyncBatchNorm":
                notes.append("in training, statistics run over the whole process group")
        elif running:
            fields["mode"] = TRAIN if training else EVAL
        if momentum is None and running:
            notes.append("momentum=None: the running statistics are a cumulative average")
    elif op == "gn":
        groups = cfg.get("num_groups")
        channels = cfg.get("num_channels")
        fields.update(groups=groups if isinstance(groups, int) else None, channel_axis=1)
        if isinstance(channels, int):
            fields["feature_shape"] = (channels,)
        elif isinstance(weight, torch.Tensor):
            fields["feature_shape"] = tuple(weight.shape)
    else:  # ln, rms: the trailing len(normalized_shape) axes
        shape = cfg.get("normalized_shape")
        if isinstance(shape, (list, tuple)) and all(isinstance(n, int) for n in shape):
            fields.update(axes=tuple(range(-len(shape), 0)), feature_shape=tuple(shape))
    if "feature_shape" not in fields and isinstance(weight, torch.Tensor) and not lazy:
        fields["feature_shape"] = tuple(int(n) for n in weight.shape)
    eps = cfg.get("eps")
    if eps is None and op == "rms":
        eps_value: float | str | None = MACHINE_EPS
        notes.append("eps=None: finfo(float32).eps for fp16/bf16/fp32 input, finfo(float64).eps for fp64")
    else:
        eps_value = float(eps) if isinstance(eps, (int, float)) else None
    return NormLayer(
        path=path,
        op=op,
        kind=kind,
        framework=FRAMEWORK,
        confirmed=True,
        basis=BUILT_IN,
        eps=eps_value,
        weight=weight is not None,
        bias=bias is not None,
        dtype=dtype,
        params=params,
        notes=tuple(notes),
        **fields,
    )


def inspect_modules(model: torch.nn.Module, scripted: bool = False) -> Findings:
    """Every norm layer of ``model`` (and candidates), in named_modules order."""
    found = Findings()
    if getattr(model, "training", False):
        found.note("the model is in training mode (model.train()): batch norm layers normalize with batch statistics")
    for name, module in model.named_modules():
        path = name or ROOT_PATH
        prefix = f"{name}." if name else ""
        where, class_name = _class_of(module)
        record = _record(module, path, prefix, where, class_name, scripted)
        if record is not None:
            found.add(record)
    return found


def _record(
    module: torch.nn.Module, path: str, prefix: str, where: str, class_name: str, scripted: bool
) -> NormLayer | None:
    if where.startswith(TORCH_NN) or where == "torch.nn":
        op = BUILT_INS.get(class_name)
        if op is None:
            return None  # LocalResponseNorm and the like
        return builtin_record(module, path, class_name, op, prefix, f"torch.nn.{class_name}")
    if where.startswith("torch.") or not candidates.looks_like_norm(class_name):
        return None  # torch's own (quantized, ...) or not a norm at all
    kind = f"{where}.{class_name}" if where else class_name
    base = None if scripted else _builtin_base(module)
    if base is not None:  # a user subclass of a built-in: its settings are known, its forward is its own
        record = builtin_record(module, path, base, BUILT_INS[base], prefix, kind)
        return _as_candidate(record, f"subclass of torch.nn.{base}: its forward may differ")
    params = _params(module, prefix, candidates.PARAM_NAMES)
    eps = candidates.eps_attribute(module)
    return candidates.candidate(path, kind, FRAMEWORK, class_name, eps, params)


def _as_candidate(record: NormLayer, note: str) -> NormLayer:
    return replace(record, confirmed=False, basis=CANDIDATE, notes=(*record.notes, note))
