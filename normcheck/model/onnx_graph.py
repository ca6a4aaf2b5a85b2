"""One ONNX graph as the matchers read it: who produces and who consumes each tensor, the value of
every constant tensor (initializers, Constant nodes, and small constant expressions over them),
and each tensor's element type and rank where shape inference knows them. Imports onnx only
(no onnxruntime)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

# Nodes that change only a tensor's type or name: the matchers look through them
PASS_THROUGH = frozenset({"Cast", "CastLike", "Identity"})
DEFAULT_DOMAINS = ("", "ai.onnx")
MAX_FOLD_DEPTH = 12  # how deep a constant expression is followed


def domain_of(node: onnx.NodeProto) -> str:
    return "" if node.domain in DEFAULT_DOMAINS else node.domain


def attribute(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            if a.ref_attr_name:  # a function's attribute, set by its caller
                return default
            return onnx.helper.get_attribute_value(a)
    return default


def elem_type_name(elem_type: int) -> str | None:
    if not elem_type:
        return None
    try:
        return str(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError, TypeError):
        return onnx.TensorProto.DataType.Name(elem_type).lower()


@dataclass
class Const:
    value: np.ndarray
    source: str  # the initializer or Constant tensor the value comes from


@dataclass
class GraphView:
    """Index of one graph (the main graph, a subgraph of If/Loop/Scan, or a local function)."""

    nodes: list[onnx.NodeProto]
    initializers: dict[str, onnx.TensorProto]
    opsets: dict[str, int]
    prefix: str = ""  # put before node names in paths: "" for the main graph
    types: dict[str, int] = field(default_factory=dict)  # tensor -> ONNX element type
    ranks: dict[str, int] = field(default_factory=dict)
    producer: dict[str, int] = field(default_factory=dict)
    consumers: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    _consts: dict[str, Const | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for i, node in enumerate(self.nodes):
            for name in node.output:
                if name:
                    self.producer[name] = i
            for name in node.input:
                if name:
                    self.consumers[name].append(i)
        for name, tensor in self.initializers.items():
            self.types.setdefault(name, tensor.data_type)
            self.ranks.setdefault(name, len(tensor.dims))

    # -- names and types -----------------------------------------------------------------

    def name(self, i: int) -> str:
        node = self.nodes[i]
        return self.prefix + (node.name or f"{node.op_type}#{i}")

    def dtype(self, tensor: str) -> str | None:
        return elem_type_name(self.types.get(tensor, 0))

    def rank(self, tensor: str) -> int | None:
        return self.ranks.get(tensor)

    def opset(self, node: onnx.NodeProto) -> int | None:
        return self.opsets.get(domain_of(node))

    # -- walking -------------------------------------------------------------------------

    def node_of(self, tensor: str) -> tuple[int, onnx.NodeProto] | None:
        i = self.producer.get(tensor)
        return None if i is None else (i, self.nodes[i])

    def source(self, tensor: str, passed: list[int] | None = None) -> str:
        """The tensor upstream of any Cast/Identity nodes; their indices go into ``passed``."""
        seen = 0
        while seen < MAX_FOLD_DEPTH:
            got = self.node_of(tensor)
            if got is None or got[1].op_type not in PASS_THROUGH or not got[1].input:
                return tensor
            if passed is not None:
                passed.append(got[0])
            tensor = got[1].input[0]
            seen += 1
        return tensor

    def made_by(self, tensor: str, *ops: str, passed: list[int] | None = None) -> tuple[int, onnx.NodeProto] | None:
        """The node of one of ``ops`` that produces ``tensor`` (looking through casts), else None."""
        got = self.node_of(self.source(tensor, passed))
        if got is None or got[1].op_type not in ops:
            return None
        return got

    def users(self, tensor: str, passed: list[int] | None = None) -> list[tuple[int, onnx.NodeProto]]:
        """The nodes reading ``tensor``, looking through Cast/Identity nodes that have one reader."""
        out = []
        for i in self.consumers.get(tensor, []):
            node = self.nodes[i]
            if node.op_type in PASS_THROUGH and node.input and node.input[0] == tensor:
                after = self.users(node.output[0], passed)
                if after and passed is not None:
                    passed.append(i)
                out.extend(after)
            else:
                out.append((i, node))
        return out

    def sole_user(self, tensor: str, passed: list[int]) -> tuple[int, onnx.NodeProto] | None:
        """The one node reading ``tensor`` (through casts), when exactly one does."""
        trail: list[int] = []
        found = self.users(tensor, trail)
        if len(found) != 1:
            return None
        passed.extend(trail)
        return found[0]

    # -- constants -----------------------------------------------------------------------

    def const(self, tensor: str) -> Const | None:
        """The value of a constant tensor: an initializer, a Constant node, or Cast, Identity,
        Unsqueeze, Squeeze, Reshape, Add, Sub, Mul, Div of constants; None otherwise."""
        if tensor not in self._consts:
            self._consts[tensor] = None  # a cycle cannot recurse forever
            self._consts[tensor] = self._fold(tensor, 0)
        return self._consts[tensor]

    def _fold(self, tensor: str, depth: int) -> Const | None:
        if not tensor or depth > MAX_FOLD_DEPTH:
            return None
        if tensor in self.initializers:
            init = self.initializers[tensor]
            if init.data_location == onnx.TensorProto.EXTERNAL:
                return None  # not loaded: never read a path the file names
            try:
                return Const(np.asarray(numpy_helper.to_array(init)), tensor)
            except Exception:
                return None
        got = self.node_of(tensor)
        if got is None:
            return None
        node = got[1]
        op = node.op_type
        if op == "Constant":
            return self._constant_node(node, tensor)
        inputs = [self.const(name) if name else None for name in node.input]
        first = inputs[0] if inputs else None
        try:
            if op in PASS_THROUGH and first is not None:
                to = attribute(node, "to")
                value = first.value if to is None else first.value.astype(onnx.helper.tensor_dtype_to_np_dtype(to))
                return Const(value, first.source)
            if op == "Unsqueeze" and first is not None:
                axes = attribute(node, "axes")
                if axes is None and len(inputs) > 1 and inputs[1] is not None:
                    axes = inputs[1].value.tolist()
                if axes is None:
                    return None
                return Const(_unsqueeze(first.value, [int(a) for a in axes]), first.source)
            if op == "Squeeze" and first is not None:
                axes = attribute(node, "axes")
                if axes is None and len(inputs) > 1 and inputs[1] is not None:
                    axes = inputs[1].value.tolist()
                value = np.squeeze(first.value, axis=tuple(int(a) for a in axes) if axes else None)
                return Const(value, first.source)
            if op == "Reshape" and first is not None and len(inputs) > 1 and inputs[1] is not None:
                shape = [int(n) for n in inputs[1].value.tolist()]
                shape = [first.value.shape[k] if n == 0 and k < first.value.ndim else n for k, n in enumerate(shape)]
                return Const(first.value.reshape(shape), first.source)
            if op in ("Add", "Sub", "Mul", "Div") and len(inputs) == 2 and all(c is not None for c in inputs):
                a, b = inputs[0], inputs[1]
                assert a is not None and b is not None
                fn = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op]
                with np.errstate(all="ignore"):
                    return Const(
                        np.asarray(fn(a.value, b.value)), a.source if a.value.size >= b.value.size else b.source
                    )
        except (ValueError, TypeError, IndexError):
            return None
        return None

    def _constant_node(self, node: onnx.NodeProto, tensor: str) -> Const | None:
        for a in node.attribute:
            value = onnx.helper.get_attribute_value(a)
            if a.name == "value":
                return Const(np.asarray(numpy_helper.to_array(value)), tensor)
            if a.name in ("value_float", "value_int"):
                return Const(np.asarray(value), tensor)
            if a.name in ("value_floats", "value_ints"):
                return Const(np.asarray(list(value)), tensor)
        return None

    def scalar(self, tensor: str) -> float | None:
        """A constant with a single value (any shape of size 1), as a float."""
        init = self.initializers.get(tensor)
        if init is not None and int(np.prod(init.dims)) != 1:  # not one value: never read a large tensor for it
            return None
        c = self.const(tensor)
        if c is None or c.value.size != 1:
            return None
        try:
            return shortest(c.value.reshape(())[()])
        except (TypeError, ValueError):
            return None


def shortest(value: Any) -> float:
    """A float (or a NumPy scalar) as the shortest decimal that rounds to it in its own dtype:
    ONNX keeps float attributes in float32, so an epsilon written as 1e-5 reads 1e-05, not
    9.99999974738e-06 (the float32 it is)."""
    if isinstance(value, float):
        value = np.float32(value)
    if isinstance(value, np.floating):
        return float(str(value))
    return float(value)


def _unsqueeze(value: np.ndarray, axes: list[int]) -> np.ndarray:
    rank = value.ndim + len(axes)
    for axis in sorted(a % rank for a in axes):
        value = np.expand_dims(value, axis)
    return value


def type_info(model: onnx.ModelProto) -> tuple[dict[str, int], dict[str, int], str | None]:
    """(element types, ranks, a note when shape inference failed) for the main graph's tensors."""
    note = None
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as e:
        inferred, note = model, f"shape inference failed ({type(e).__name__}): some dtypes and ranks are unknown"
    types: dict[str, int] = {}
    ranks: dict[str, int] = {}
    graph = inferred.graph
    for info in (*graph.input, *graph.output, *graph.value_info):
        t = info.type.tensor_type
        if t.elem_type:
            types[info.name] = t.elem_type
        if t.HasField("shape"):
            ranks[info.name] = len(t.shape.dim)
    return types, ranks, note
