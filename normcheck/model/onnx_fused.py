"""ONNX's normalization ops, and ONNX Runtime's contrib ops (domain com.microsoft), one record per
node with the node's own attributes (or the op's documented defaults) and its constant inputs."""

from __future__ import annotations

from typing import Any

import onnx

from normcheck.model.onnx_graph import GraphView, attribute, domain_of, shortest
from normcheck.model.records import EVAL, FUSED, OLD, ONE_PASS, TRAIN, NormLayer, ParamSummary
from normcheck.model.stats import summarize
from normcheck.names import OpName

FRAMEWORK = "onnxruntime"
MS = "com.microsoft"
# (domain, op type) -> (op, the roles of the inputs after X, in order; "" for one that is not a parameter)
OPS: dict[tuple[str, str], tuple[OpName, tuple[str, ...]]] = {
    ("", "BatchNormalization"): ("bn", ("weight", "bias", "running_mean", "running_var")),
    ("", "LayerNormalization"): ("ln", ("weight", "bias")),
    ("", "InstanceNormalization"): ("in", ("weight", "bias")),
    ("", "GroupNormalization"): ("gn", ("weight", "bias")),
    ("", "RMSNormalization"): ("rms", ("weight",)),
    ("", "SimplifiedLayerNormalization"): ("rms", ("weight",)),  # ONNX Runtime's, in the default domain
    (MS, "SimplifiedLayerNormalization"): ("rms", ("weight",)),
    (MS, "LayerNormalization"): ("ln", ("weight", "bias")),
    (MS, "SkipLayerNormalization"): ("ln", ("", "weight", "bias", "")),
    (MS, "SkipSimplifiedLayerNormalization"): ("rms", ("", "weight", "")),
    (MS, "GroupNorm"): ("gn", ("weight", "bias")),
    (MS, "SkipGroupNorm"): ("gn", ("weight", "bias", "", "")),
}
# ONNX's documented defaults, by attribute
DEFAULT_EPS = 1e-5
DEFAULT_MOMENTUM = 0.9


def kind_of(node: onnx.NodeProto) -> str:
    domain = domain_of(node)
    return f"{domain}.{node.op_type}" if domain else f"onnx {node.op_type}"


def _trailing_axes(axis: int, rank: int | None) -> tuple[int, ...] | None:
    """The axes from ``axis`` to the last, counted from the end."""
    if axis < 0:
        return tuple(range(axis, 0))
    if rank is None:
        return None
    return tuple(range(axis - rank, 0))


def _params(g: GraphView, node: onnx.NodeProto, roles: tuple[str, ...]) -> tuple[ParamSummary, ...]:
    out = []
    for role, name in zip(roles, node.input[1:], strict=False):
        if not role or not name:
            continue
        c = g.const(name)
        if c is None:
            init = g.initializers.get(name)
            shape = tuple(int(d) for d in init.dims) if init is not None else None
            out.append(ParamSummary(role, name, shape, g.dtype(name), note="not a constant: a graph input or computed"))
        else:
            out.append(summarize(role, c.source, c.value))
    return tuple(out)


def fused_record(g: GraphView, i: int, node: onnx.NodeProto) -> NormLayer | None:
    key = (domain_of(node), node.op_type)
    if key not in OPS:
        return None
    op, roles = OPS[key]
    x = node.input[0] if node.input else ""
    rank = g.rank(x)
    opset = g.opset(node)
    params = _params(g, node, roles)
    present = {role for role, name in zip(roles, node.input[1:], strict=False) if role and name}
    eps = attribute(node, "epsilon")
    notes: list[str] = []
    fields: dict[str, Any] = {}
    if eps is None:
        if key[0] == MS and node.op_type != "SimplifiedLayerNormalization":
            notes.append("no epsilon attribute (ONNX Runtime requires one for this op)")
        else:
            eps = DEFAULT_EPS
    if op == "bn":
        momentum = attribute(node, "momentum", DEFAULT_MOMENTUM)
        training = bool(attribute(node, "training_mode", 0))
        fields.update(
            channel_axis=1,
            running_stats=True,
            momentum=shortest(float(momentum)),
            momentum_weights=OLD,
            mode=TRAIN if training else EVAL,
        )
        if rank is not None:
            fields["axes"] = (0, *range(2, rank))
    elif op == "in":
        fields["channel_axis"] = 1
        if rank is not None:
            fields["axes"] = tuple(range(2, rank))
    elif op == "gn":
        groups = attribute(node, "num_groups", attribute(node, "groups"))
        fields["groups"] = int(groups) if groups is not None else None
        if key[0] == MS:
            channels_last = bool(attribute(node, "channels_last", 1))
            fields["channel_axis"] = -1 if channels_last else 1
            if attribute(node, "activation", 0):
                notes.append("activation=1: SiLU applied after the normalization")
        else:
            fields["channel_axis"] = 1
            if opset is None or opset >= 21:  # its function body, which ONNX Runtime runs
                fields["variance"] = ONE_PASS
            notes.extend(_group_scale_note(opset, params, fields["groups"]))
    elif key[0] == MS and node.op_type.startswith("Skip"):
        fields["axes"] = (-1,)
        notes.append("normalizes input + skip (+ bias): the sum is its input")
    else:  # LayerNormalization, RMSNormalization, SimplifiedLayerNormalization: `axis` to the last
        axis = int(attribute(node, "axis", -1))
        fields["axes"] = _trailing_axes(axis, rank)
        if fields["axes"] is None:
            notes.append(f"axis={axis}: from axis {axis} to the last (the input's rank is unknown)")
    stash = attribute(node, "stash_type")
    if stash is not None and int(stash) != 1:
        notes.append(f"stash_type={int(stash)}: statistics in {onnx.TensorProto.DataType.Name(int(stash)).lower()}")
    weight = next((p for p in params if p.role == "weight"), None)
    if weight is not None and weight.shape is not None:
        fields["feature_shape"] = weight.shape
    dtype = g.dtype(x) or (weight.dtype if weight is not None else None)
    return NormLayer(
        path=g.name(i),
        op=op,
        kind=kind_of(node),
        framework=FRAMEWORK,
        confirmed=True,
        basis=FUSED,
        eps=None if eps is None else shortest(float(eps)),
        weight="weight" in present,
        bias="bias" in present,
        dtype=dtype,
        opset=opset,
        nodes=(g.name(i),),
        input=x or None,
        output=node.output[0] if node.output else None,
        params=params,
        notes=tuple(notes),
        **fields,
    )


def _group_scale_note(opset: int | None, params: tuple[ParamSummary, ...], groups: int | None) -> list[str]:
    """Opset 18-20 GroupNormalization takes scale and bias per group, opset 21 per channel."""
    scale = next((p for p in params if p.role == "weight"), None)
    size = scale.shape[0] if scale is not None and scale.shape else None
    if opset is not None and opset < 21:
        note = "opset 18: scale and bias per group (deprecated; opset 21 takes them per channel)"
        if size is not None and groups is not None and size != groups:
            note += f"; but the scale has {size} values for {groups} groups"
        return [note]
    return ["opset 21: scale and bias per channel"]
