"""Normalization layers that exporters spell out in elementary ONNX ops.

The walker starts at each node that divides by a standard deviation, ``Div(a, Sqrt(…))`` or
``Mul(a, Reciprocal(Sqrt(…)))`` (also ``Pow(…, -0.5)``, ``Div(1, Sqrt(…))``), and reads
backwards from it:

    under the root   Add(v, eps), or v alone (no eps); Add(Sqrt(v), eps) is eps outside the root
    v, two-pass      ReduceMean(Pow(d, 2) | Mul(d, d)) with d = Sub(x, ReduceMean(x))
    v, one-pass      Sub(ReduceMean(Pow(x, 2) | Mul(x, x)), Pow(ReduceMean(x), 2) | Mul(m, m))
    v, RMS           ReduceMean(Pow(x, 2) | Mul(x, x)), and the numerator a is x itself
    numerator        the centred d (or the same Sub(x, mean) again) for layer norm; x for RMS

then forwards from it: a Reshape back (group norm, when x came out of a Reshape into groups),
``Mul`` by a constant weight and ``Add`` of a constant bias, each taken only when it is the one
reader of the tensor before it. Cast and Identity nodes anywhere along the way are looked through,
so a float16 graph that casts to float32 around the statistics matches as well. ReduceMean's axes
come from its attribute (opset < 18) or its second input (opset ≥ 18); eps, weights and reshape
shapes from initializers, Constant nodes or constant expressions of them.

PyTorch's TorchScript exporter writes group norm as ``Reshape → InstanceNormalization (a scale of
ones per group) → Reshape → Mul → Add``; ``match_grouped_instance_norms`` recognizes that.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnx

from normcheck.model.onnx_graph import GraphView, attribute, shortest
from normcheck.model.records import MATCHED, ONE_PASS, OP_TITLES, TRAIN, TWO_PASS, NormLayer, ParamSummary
from normcheck.model.stats import summarize
from normcheck.names import OpName

FRAMEWORK = "onnxruntime"
ANCHORS = ("Div", "Mul")


@dataclass
class Core:
    """The statistics and the normalization, before any affine or reshape."""

    x: str  # the tensor normalized, as the statistics read it (after any Cast)
    centered: bool
    variance: str | None  # TWO_PASS, ONE_PASS; None for RMS
    eps: float | None
    eps_outside: bool
    axes: tuple[int, ...] | None  # None: every axis
    out: str  # the normalized tensor
    nodes: set[int] = field(default_factory=set)


@dataclass
class Tail:
    """What follows the core: a reshape back, the weight, the bias."""

    out: str
    nodes: set[int] = field(default_factory=set)
    reshaped: bool = False
    weight: ParamSummary | None = None
    bias: ParamSummary | None = None
    notes: list[str] = field(default_factory=list)


def reduce_axes(g: GraphView, node: onnx.NodeProto) -> tuple[int, ...] | str | None:
    """A Reduce node's axes: from its attribute (opset < 18) or its second input (opset ≥ 18);
    None for every axis; "unknown" when the axes input is not constant."""
    axes = attribute(node, "axes")
    if axes is not None:
        return tuple(int(a) for a in axes)
    if len(node.input) > 1 and node.input[1]:
        c = g.const(node.input[1])
        if c is None:
            return "unknown"
        return tuple(int(a) for a in np.asarray(c.value).reshape(-1))
    return None


def _root(g: GraphView, tensor: str, trail: list[int]) -> tuple[str, float | None] | None:
    """(the tensor under a square root, eps added outside it or None) for a standard deviation."""
    got = g.made_by(tensor, "Sqrt", "Pow", "Add", passed=trail)
    if got is None:
        return None
    i, node = got
    if node.op_type == "Sqrt" or (node.op_type == "Pow" and g.scalar(node.input[1]) == 0.5):
        trail.append(i)
        return node.input[0], None
    if node.op_type == "Add":
        for inner, outer in ((node.input[0], node.input[1]), (node.input[1], node.input[0])):
            eps = g.scalar(outer)
            if eps is None:
                continue
            sub: list[int] = []
            found = _root(g, inner, sub)
            if found is not None and found[1] is None:
                trail.extend([i, *sub])
                return found[0], eps
    return None


def _inverse_std(g: GraphView, i: int, node: onnx.NodeProto) -> list[tuple[str, str, float | None, list[int]]]:
    """Each (numerator, tensor under the root, eps outside, nodes) reading of an anchor node."""
    out = []
    if node.op_type == "Div":
        trail: list[int] = [i]
        found = _root(g, node.input[1], trail)
        if found is not None:
            out.append((node.input[0], found[0], found[1], trail))
        return out
    for a, r in ((node.input[0], node.input[1]), (node.input[1], node.input[0])):
        trail = [i]
        got = g.made_by(r, "Reciprocal", "Pow", "Div", passed=trail)
        if got is None:
            continue
        j, inv = got
        trail.append(j)
        found = None
        if inv.op_type == "Reciprocal":
            found = _root(g, inv.input[0], trail)
        elif inv.op_type == "Pow" and g.scalar(inv.input[1]) == -0.5:
            found = (inv.input[0], None)
        elif inv.op_type == "Div" and g.scalar(inv.input[0]) == 1.0:
            found = _root(g, inv.input[1], trail)
        if found is not None:
            out.append((a, found[0], found[1], trail))
    return out


def _square_of(g: GraphView, tensor: str, trail: list[int]) -> str | None:
    """x for a tensor that is Pow(x, 2) or Mul(x, x)."""
    got = g.made_by(tensor, "Pow", "Mul", passed=trail)
    if got is None:
        return None
    i, node = got
    if node.op_type == "Pow" and g.scalar(node.input[1]) == 2.0:
        trail.append(i)
        return node.input[0]
    if node.op_type == "Mul" and g.source(node.input[0]) == g.source(node.input[1]):
        trail.append(i)
        return node.input[0]
    return None


def _mean_of(g: GraphView, tensor: str, trail: list[int]) -> tuple[str, Any, int] | None:
    """(x, axes, node index) for a tensor that is ReduceMean(x)."""
    got = g.made_by(tensor, "ReduceMean", passed=trail)
    if got is None:
        return None
    i, node = got
    trail.append(i)
    return node.input[0], reduce_axes(g, node), i


def _centered(g: GraphView, d: str, trail: list[int]) -> tuple[str, str, Any] | None:
    """(x, mean tensor, axes) for d = Sub(x, ReduceMean(x))."""
    got = g.made_by(d, "Sub", passed=trail)
    if got is None:
        return None
    i, sub = got
    mean = _mean_of(g, sub.input[1], trail)
    if mean is None or g.source(mean[0]) != g.source(sub.input[0]):
        return None
    trail.append(i)
    return sub.input[0], sub.input[1], mean[1]


def _core(g: GraphView, i: int, node: onnx.NodeProto) -> Core | None:
    for numerator, under, eps_outside, trail in _inverse_std(g, i, node):
        eps: float | None = eps_outside
        v = under
        got = g.made_by(under, "Add", passed=trail)
        if got is not None and eps_outside is None:
            for var, const in ((got[1].input[0], got[1].input[1]), (got[1].input[1], got[1].input[0])):
                value = g.scalar(const)
                if value is not None:
                    eps, v = value, var
                    trail.append(got[0])
                    break
        core = _variance(g, v, numerator, trail)
        if core is None:
            continue
        x, centered, variance, axes = core
        if axes == "unknown":
            continue
        return Core(
            x=x,
            centered=centered,
            variance=variance,
            eps=eps,
            eps_outside=eps_outside is not None,
            axes=axes,
            out=node.output[0],
            nodes=set(trail),
        )
    return None


def _variance(g: GraphView, v: str, numerator: str, trail: list[int]) -> tuple[str, bool, str | None, Any] | None:
    """(x, centered, variance kind, axes) when ``v`` is a variance (or mean square) of x that the
    numerator matches."""
    # two-pass (or RMS): ReduceMean of a square
    sub: list[int] = []
    mean = _mean_of(g, v, sub)
    if mean is not None:
        d = _square_of(g, mean[0], sub)
        if d is not None:
            centred = _centered(g, d, sub)
            if centred is not None:
                x, m, axes = centred
                if axes != mean[1] or not _same_centering(g, numerator, d, x, m, sub):
                    return None
                trail.extend(sub)
                return x, True, TWO_PASS, axes
            if g.source(numerator) == g.source(d):  # RMS: x / sqrt(mean(x²) + eps)
                trail.extend(sub)
                return d, False, None, mean[1]
        return None
    # one-pass: E[x²] − E[x]²
    sub = []
    got = g.made_by(v, "Sub", passed=sub)
    if got is None:
        return None
    j, diff = got
    mean_sq = _mean_of(g, diff.input[0], sub)
    if mean_sq is None:
        return None
    squared = _square_of(g, mean_sq[0], sub)  # E[x²]: the x squared
    mean_t = _square_of(g, diff.input[1], sub)  # E[x]²: the mean squared
    if squared is None or mean_t is None:
        return None
    mean = _mean_of(g, mean_t, sub)
    if mean is None or g.source(mean[0]) != g.source(squared) or mean[1] != mean_sq[1]:
        return None
    if not _same_centering(g, numerator, None, squared, mean_t, sub):
        return None
    sub.append(j)
    trail.extend(sub)
    return squared, True, ONE_PASS, mean[1]


def _same_centering(g: GraphView, numerator: str, d: str | None, x: str, mean: str, trail: list[int]) -> bool:
    """Whether the numerator is x − mean: the very tensor d, or another Sub of the same two."""
    if d is not None and g.source(numerator) == g.source(d):
        return True
    sub: list[int] = []
    got = g.made_by(numerator, "Sub", passed=sub)
    if got is None:
        return False
    _, node = got
    if g.source(node.input[0]) == g.source(x) and g.source(node.input[1]) == g.source(mean):
        trail.extend([*sub, got[0]])
        return True
    return False


# ---- after the core --------------------------------------------------------------------------


def _param(g: GraphView, role: str, tensor: str, notes: list[str]) -> ParamSummary | None:
    """A constant weight or bias; a weight stored as w and applied as (1 + w) is noted."""
    c = g.const(tensor)
    if c is None:
        return None
    got = g.made_by(tensor, "Add")
    if got is not None:
        for one, stored in ((got[1].input[0], got[1].input[1]), (got[1].input[1], got[1].input[0])):
            s = g.const(stored)
            if g.scalar(one) == 1.0 and s is not None:
                notes.append(f"the {role} is applied as 1 + {role} (stored {s.source})")
                return summarize(role, s.source, s.value)
    return summarize(role, c.source, c.value)


def _affine_step(g: GraphView, tensor: str, op: str, tail: Tail, role: str) -> bool:
    trail: list[int] = []
    user = g.sole_user(tensor, trail)
    if user is None or user[1].op_type != op:
        return False
    i, node = user
    others = [name for name in node.input if g.source(name) != g.source(tensor)]
    if len(others) != 1:
        return False
    summary = _param(g, role, others[0], tail.notes)
    if summary is None:
        return False
    setattr(tail, role, summary)
    tail.nodes.update([*trail, i])
    tail.out = node.output[0]
    return True


def _tail(g: GraphView, out: str, reshaped_input: bool) -> Tail:
    tail = Tail(out)
    if reshaped_input:
        trail: list[int] = []
        user = g.sole_user(out, trail)
        if user is not None and user[1].op_type == "Reshape":
            tail.reshaped = True
            tail.nodes.update([*trail, user[0]])
            tail.out = user[1].output[0]
    if _affine_step(g, tail.out, "Mul", tail, "weight"):
        _affine_step(g, tail.out, "Add", tail, "bias")
    elif _affine_step(g, tail.out, "Add", tail, "bias"):
        tail.notes.append("a bias and no weight")
    consumers = g.consumers.get(tail.out, [])  # a last Cast back to the model's dtype belongs to the layer
    if len(consumers) == 1 and g.nodes[consumers[0]].op_type in ("Cast", "CastLike"):
        tail.nodes.add(consumers[0])
        tail.out = g.nodes[consumers[0]].output[0]
    return tail


def _groups(g: GraphView, reshape: onnx.NodeProto) -> int | None:
    """G of a Reshape into groups: (N, G, -1) or (N, G, C/G, ...), with 0 or N for the batch."""
    if len(reshape.input) < 2:
        return None
    c = g.const(reshape.input[1])
    if c is None:
        return None
    shape = [int(n) for n in np.asarray(c.value).reshape(-1)]
    return shape[1] if len(shape) >= 3 and shape[1] > 0 else None


def _classify(g: GraphView, core: Core, grouped: bool, weight: ParamSummary | None) -> OpName:
    """Which norm a centred core is, from its axes and its weight's shape: batch norm when the
    statistics run over the batch axis; instance norm when they run over the spatial axes only and
    the weight is per channel, (C, 1, ..., 1) (or, with no weight, over every axis after the
    channels of a 4-D or larger tensor); layer norm otherwise."""
    if grouped:
        return "gn"
    if not core.centered:
        return "rms"
    rank = g.rank(core.x) or g.rank(g.source(core.x))
    if core.axes is None or rank is None:
        return "bn" if core.axes is not None and 0 in core.axes else "ln"
    axes = sorted(a % rank for a in core.axes)
    if 0 in axes:
        return "bn"
    if 1 in axes:
        return "ln"
    if weight is not None and weight.shape is not None:
        per_channel = len(weight.shape) == rank - 1 and weight.shape[0] > 1 and all(n == 1 for n in weight.shape[1:])
        return "in" if per_channel else "ln"
    return "in" if rank >= 4 and axes == list(range(2, rank)) else "ln"


def _record(g: GraphView, op: OpName, nodes: set[int], x_in: str, core_x: str, tail: Tail, **fields: Any) -> NormLayer:
    order = sorted(i for i in nodes if g.nodes[i].op_type != "Constant")
    names = tuple(g.name(i) for i in order)
    path = names[0] if len(names) == 1 else f"{names[0]}..{names[-1]}"
    dtype = g.dtype(x_in)
    compute = g.dtype(core_x)
    params = tuple(p for p in (tail.weight, tail.bias) if p is not None)
    opset = g.opsets.get("")
    return NormLayer(
        path=path,
        op=op,
        kind=f"decomposed {OP_TITLES[op]}",
        framework=FRAMEWORK,
        confirmed=True,
        basis=MATCHED,
        weight=tail.weight is not None,
        bias=tail.bias is not None,
        dtype=dtype,
        compute_dtype=compute if compute and compute != dtype else None,
        opset=opset,
        nodes=names,
        input=x_in,
        output=tail.out,
        params=params,
        **fields,
    )


def match_decomposed(g: GraphView, claimed: set[int]) -> list[tuple[int, NormLayer]]:
    """Every decomposed layer/RMS/instance/group/batch norm, as (first node index, record)."""
    out = []
    for i, node in enumerate(g.nodes):
        if node.op_type not in ANCHORS or i in claimed:
            continue
        core = _core(g, i, node)
        if core is None or core.nodes & claimed:
            continue
        trail: list[int] = []
        x_in = g.source(core.x, trail)
        reshape = g.made_by(core.x, "Reshape")
        tail = _tail(g, core.out, reshape is not None)
        grouped, groups = tail.reshaped, None
        if grouped and reshape is not None:
            groups = _groups(g, reshape[1])
            trail = [reshape[0]]
            x_in = g.source(reshape[1].input[0], trail)
        nodes = core.nodes | tail.nodes | set(trail)
        op = _classify(g, core, grouped, tail.weight)
        notes = list(tail.notes)
        if core.eps is None:
            notes.append("no eps: nothing is added to the variance")
        if core.eps_outside:
            notes.append("eps is added outside the square root: x / (sqrt(var) + eps)")
        fields: dict[str, Any] = {"eps": core.eps, "variance": core.variance, "notes": tuple(notes)}
        if op == "gn":
            fields.update(groups=groups, channel_axis=1)
            notes.append(f"statistics over axes {_axes_text(core.axes)} of the tensor reshaped into groups")
            fields["notes"] = tuple(notes)
        elif op in ("in", "bn"):
            fields.update(axes=core.axes, channel_axis=1)
        else:
            fields["axes"] = core.axes
        if tail.weight is not None and tail.weight.shape is not None:
            fields["feature_shape"] = _feature_shape(tail.weight.shape)
        if op == "bn":
            fields.update(running_stats=False, mode=TRAIN)
            notes.append("batch statistics (no running statistics in the graph)")
            fields["notes"] = tuple(notes)
        out.append((min(nodes), _record(g, op, nodes, x_in, core.x, tail, **fields)))
        claimed |= nodes
    return out


def _axes_text(axes: tuple[int, ...] | None) -> str:
    return "all" if axes is None else str(list(axes))


def _feature_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A weight's shape without the singleton axes it broadcasts over: (C, 1, 1) -> (C,)."""
    trimmed = list(shape)
    while len(trimmed) > 1 and trimmed[-1] == 1:
        trimmed.pop()
    while len(trimmed) > 1 and trimmed[0] == 1:
        trimmed.pop(0)
    return tuple(trimmed)


def match_grouped_instance_norms(g: GraphView, claimed: set[int]) -> list[tuple[int, NormLayer]]:
    """PyTorch's exported group norm: Reshape → InstanceNormalization → Reshape → Mul → Add."""
    out = []
    for i, node in enumerate(g.nodes):
        if node.op_type != "InstanceNormalization" or i in claimed or len(node.input) < 3:
            continue
        trail: list[int] = []
        reshape = g.made_by(node.input[0], "Reshape", passed=trail)
        if reshape is None:
            continue
        tail = _tail(g, node.output[0], True)
        if not tail.reshaped:
            continue
        scale, bias = g.const(node.input[1]), g.const(node.input[2])
        groups = _groups(g, reshape[1]) or (int(scale.value.size) if scale is not None else None)
        notes = list(tail.notes)
        trivial = scale is not None and bias is not None and np.all(scale.value == 1) and np.all(bias.value == 0)
        if not trivial:
            notes.append("the InstanceNormalization's own scale and bias are not 1 and 0: a per-group affine too")
        x_in = g.source(reshape[1].input[0], trail)
        nodes = {i, reshape[0], *trail, *tail.nodes}
        eps = attribute(node, "epsilon", 1e-5)
        fields: dict[str, Any] = {
            "eps": shortest(float(eps)),
            "groups": groups,
            "channel_axis": 1,
            "notes": (*notes, "exported as InstanceNormalization over the channels reshaped into groups"),
        }
        if tail.weight is not None and tail.weight.shape is not None:
            fields["feature_shape"] = _feature_shape(tail.weight.shape)
        record = _record(g, "gn", nodes, x_in, node.input[0], tail, **fields)
        out.append((min(nodes), replace(record, kind="group norm as InstanceNormalization + Reshape")))
        claimed |= nodes
    return out
