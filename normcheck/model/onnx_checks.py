"""Per-layer checks of an ONNX model: run the model once with ONNX Runtime, every norm layer's
input added as a graph output, then cut each layer (its fused node, or the nodes of its matched
subgraph) out into a model of its own, in the model's dtypes, and run that with ONNX Runtime on
the captured activation and on the hostile input kinds. Forward only: ONNX has no gradients.

Sessions use ONNX Runtime's basic graph optimizations (constant folding), not its fusions: at its
default level ORT may replace a spelled-out layer norm with its own fused kernel, which computes
in float32 whatever the graph says; the check is of the graph as written. Imports onnx and
onnxruntime; the worker imports this module only for ONNX models."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from normcheck.errors import UsageError
from normcheck.frameworks.base import RunOutput
from normcheck.frameworks.onnxruntime.adapter import GRAD_REASON, session_options
from normcheck.model import checks
from normcheck.model.checks import LayerSetup
from normcheck.model.onnx_graph import GraphView, attribute
from normcheck.model.onnx_model import opsets_of
from normcheck.model.records import EVAL, FUSED, Inventory, NormLayer
from normcheck.ops import OpParams
from normcheck.problem import Problem
from normcheck.verify.records import CheckResult

FRAMEWORK = "onnxruntime"
DEFAULT_EPS = 1e-5
GRADS = ("grad_input", "grad_weight", "grad_bias")
UNSUPPORTED_KINDS = {
    "com.microsoft.SkipLayerNormalization": "normalizes input + skip: its other inputs are not captured",
    "com.microsoft.SkipSimplifiedLayerNormalization": "normalizes input + skip: its other inputs are not captured",
    "com.microsoft.SkipGroupNorm": "normalizes input + skip: its other inputs are not captured",
    "com.microsoft.GroupNorm": "channels-last group norm with an optional SiLU: not checked yet",
}


ONNXRUNTIME, REFERENCE = "onnxruntime", "onnx-reference"
RUNTIMES = (ONNXRUNTIME, REFERENCE)


class Session:
    """A model ready to run: ONNX Runtime on the CPU (basic optimizations), or ONNX's reference
    evaluator (onnx.reference: NumPy, every op in its tensors' own dtype, the graph as written).
    ONNX Runtime's CPU provider runs float16 nodes it has no float16 kernel for in float32
    (its cast-inserting transformer runs at every optimization level), so a float16 graph's
    overflows show only in the reference evaluator, or on a device that computes in float16."""

    def __init__(self, model: onnx.ModelProto, runtime: str = ONNXRUNTIME) -> None:
        self.runtime = runtime
        if runtime == REFERENCE:
            from onnx.reference import ReferenceEvaluator

            self.ref: Any = ReferenceEvaluator(model)
            self.input_names = list(self.ref.input_names)
            self.output_names = list(self.ref.output_names)
        else:
            options = session_options(threads=0)
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            self.ort = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
            self.input_names = [i.name for i in self.ort.get_inputs()]
            self.output_names = [o.name for o in self.ort.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.runtime == REFERENCE:
            return [np.asarray(v) for v in self.ref.run(None, feeds)]
        return [np.asarray(v) for v in self.ort.run(None, feeds)]


def _session(model: onnx.ModelProto, runtime: str = ONNXRUNTIME) -> Session:
    return Session(model, runtime)


def _np_dtype(elem_type: int) -> np.dtype | None:
    try:
        dt = np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError, TypeError):
        return None
    return dt


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def model_feeds(
    model: onnx.ModelProto, shapes: tuple[tuple[int, ...], ...], arrays: list[np.ndarray] | None, seed: int
) -> dict[str, np.ndarray]:
    """One array per graph input: the arrays given (by name when the .npz names them all, else in
    order), or seeded normal(0, 1) values of each --input-shape (or the input's own static shape)."""
    inputs = _graph_inputs(model)
    names = [i.name for i in inputs]
    if arrays is not None:
        if len(arrays) != len(inputs):
            raise UsageError(f"the model has {len(inputs)} inputs ({', '.join(names)}); --input holds {len(arrays)}")
        return dict(zip(names, arrays, strict=True))
    if shapes and len(shapes) != len(inputs):
        raise UsageError(f"the model has {len(inputs)} inputs ({', '.join(names)}); give one --input-shape for each")
    rng = np.random.default_rng(seed)
    feeds = {}
    for k, info in enumerate(inputs):
        t = info.type.tensor_type
        dt = _np_dtype(t.elem_type)
        if dt is None or dt.kind != "f":
            raise UsageError(f"input {info.name!r} is not a float tensor ({dt}): give its values with --input FILE.npz")
        if shapes:
            shape = shapes[k]
        else:
            dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
            if any(d is None or d <= 0 for d in dims):
                shown = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
                raise UsageError(f"input {info.name!r} has shape {shown}: give --input-shape")
            shape = tuple(int(d) for d in dims if d is not None)
        feeds[info.name] = rng.standard_normal(shape).astype(dt)
    return feeds


def capture(
    model: onnx.ModelProto, tensors: list[str], feeds: dict[str, np.ndarray], runtime: str = ONNXRUNTIME
) -> dict[str, np.ndarray]:
    """The model run once with ``tensors`` added as graph outputs; their values."""
    from normcheck.model.onnx_graph import type_info

    types, _, _ = type_info(model)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    graph_inputs = {i.name for i in m.graph.input}
    wanted = [t for t in dict.fromkeys(tensors) if t and t not in have and t not in graph_inputs]
    for name in wanted:
        if types.get(name):  # a tensor of unknown type cannot be an output: its layer is not captured
            m.graph.output.append(helper.make_tensor_value_info(name, types[name], None))
    try:
        session = _session(m, runtime)
        names = session.output_names
        values = session.run(feeds)
    except Exception as e:
        shapes = ", ".join(f"{k} {'x'.join(map(str, v.shape))} {v.dtype}" for k, v in feeds.items())
        who = "ONNX Runtime" if runtime == ONNXRUNTIME else "ONNX's reference evaluator"
        raise UsageError(f"{who} could not run the model on input {shapes}: {checks.describe_error(e)}") from None
    out = dict(zip(names, values, strict=True))
    out.update({k: v for k, v in feeds.items() if k in tensors})
    return {t: np.asarray(out[t]) for t in tensors if t in out}


def layer_model(model: onnx.ModelProto, layer: NormLayer, elem_type: int) -> onnx.ModelProto | str:
    """The layer cut out of the model: every node between its input and its output, the
    initializers they read, input and output of symbolic shape; a string saying why it cannot be."""
    graph = model.graph
    producer: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for o in node.output:
            if o:
                producer[o] = i
    inits = {t.name: t for t in graph.initializer}
    assert layer.input is not None and layer.output is not None
    keep: set[int] = set()
    stack: list[str] = [layer.output]
    outside: set[str] = set()
    while stack:
        name = stack.pop()
        if name == layer.input or name in inits:
            continue
        found = producer.get(name)
        if found is None:
            outside.add(name)
            continue
        if found not in keep:
            keep.add(found)
            stack.extend(n for n in graph.node[found].input if n)
    if outside:
        return f"the layer reads other tensors than its input ({', '.join(sorted(outside))}): not checked"
    nodes = [graph.node[i] for i in sorted(keep)]
    used = {n for node in nodes for n in node.input}
    x = helper.make_tensor_value_info(layer.input, elem_type, None)
    out_type = elem_type
    y = helper.make_tensor_value_info(layer.output, out_type, None)
    sub = helper.make_graph(nodes, "normcheck_layer", [x], [y], [inits[n] for n in sorted(used) if n in inits])
    m = helper.make_model(sub, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    m.functions.extend(model.functions)
    try:
        inferred = onnx.shape_inference.infer_shapes(m)
        for o in inferred.graph.output:
            if o.name == layer.output and o.type.tensor_type.elem_type:
                m.graph.output[0].type.tensor_type.elem_type = o.type.tensor_type.elem_type
    except Exception:
        pass
    return m


def _value(g: GraphView, name: str | None) -> np.ndarray | None:
    if name is None:
        return None
    c = g.const(name)
    return None if c is None else np.asarray(c.value, dtype=np.float64)


def onnx_setup(g: GraphView, layer: NormLayer, rank: int) -> LayerSetup | str:
    """A layer's setup from its record and the graph's constants; why not, as a string."""
    if layer.kind in UNSUPPORTED_KINDS:
        return UNSUPPORTED_KINDS[layer.kind]
    if layer.op is None or layer.input is None or layer.output is None:
        return "no input or output tensor known"
    d = checks.dtype_name(layer.dtype or "")
    if d is None:
        return f"input dtype {layer.dtype} is not one normcheck checks"
    notes: list[str] = []
    eps: float
    if isinstance(layer.eps, (int, float)):
        eps = float(layer.eps)
    else:
        eps = DEFAULT_EPS
        notes.append(f"no eps in the graph: checked against ONNX's default {DEFAULT_EPS:g}")
    weight_summary, bias_summary = layer.param("weight"), layer.param("bias")
    w = _value(g, weight_summary.name if weight_summary else None)
    b = _value(g, bias_summary.name if bias_summary else None)
    if (weight_summary is not None and w is None) or (bias_summary is not None and b is None):
        return "its weight or bias is not a constant of the graph"
    if w is not None and any("applied as 1 + weight" in n for n in layer.notes):
        w = w + 1.0
    op = layer.op
    missing = dict.fromkeys(GRADS, GRAD_REASON)
    if op in ("ln", "rms"):
        axes = layer.axes
        if axes is None:
            return "its axes are not known"
        neg = sorted(a - rank if a >= 0 else a for a in axes)
        k = len(neg)
        if neg != list(range(-k, 0)):
            return f"statistics over axes {list(axes)}, not trailing ones: not checked"
        params = OpParams(normalized_ndim=k, affine=w is not None or b is not None)
        feature = None
    elif op == "gn":
        if layer.groups is None:
            return "its group count is not known"
        per_group = w is not None and layer.groups is not None and w.size == layer.groups and layer.groups > 0
        per_group = per_group and any("per group" in n for n in layer.notes)
        params = OpParams(groups=layer.groups, affine=w is not None or b is not None, group_affine=per_group)
        feature = layer.groups if per_group else None
    elif op == "bn":
        running = bool(layer.running_stats) and layer.mode == EVAL
        params = OpParams(mode="eval" if running else "train", running_stats=running, affine=w is not None)
        feature = None
    else:
        params = OpParams(affine=w is not None or b is not None)
        feature = None
    rm = rv = None
    if op == "bn" and params.running_stats:
        rm_s, rv_s = layer.param("running_mean"), layer.param("running_var")
        rm, rv = _value(g, rm_s.name if rm_s else None), _value(g, rv_s.name if rv_s else None)
        if rm is None or rv is None:
            return "its running statistics are not constants of the graph"
        rm, rv = rm.reshape(-1), rv.reshape(-1)
    if op in ("bn", "in", "gn"):
        w = None if w is None else w.reshape(-1)
        b = None if b is None else b.reshape(-1)
        if feature is not None and w is not None and w.size != feature:
            return "its weight does not have one value per group"
    from normcheck.dtypes import quantize

    w = None if w is None else quantize(w, d)
    b = None if b is None else quantize(b, d)
    momentum = layer.new_batch_weight or 0.1
    drop = ("running_mean", "running_var")
    known = None
    if layer.basis == FUSED and layer.kind.startswith("onnx "):
        node = g.node_of(layer.output)
        stash = attribute(node[1], "stash_type") if node is not None else None
        known = f"onnx.{layer.kind.removeprefix('onnx ')}" + ("(stash_type=DOUBLE)" if stash == 11 else "")
    return LayerSetup(op, params, eps, d, momentum, w, b, rm, rv, False, missing, drop, tuple(notes), known)


def _shape_params(setup: LayerSetup, shape: tuple[int, ...]) -> LayerSetup | str:
    """ln/rms weights stored flat or with leading ones: shaped as the normalized dims."""
    if setup.op not in ("ln", "rms"):
        return setup
    k = setup.params.normalized_ndim or 1
    want = tuple(shape[len(shape) - k :])
    out = {}
    for name in ("weight", "bias"):
        a = getattr(setup, name)
        if a is None:
            continue
        if a.size != int(np.prod(want)):
            return f"its {name} has {a.size} values for normalized dims {list(want)}"
        out[name] = a.reshape(want)
    return replace(setup, **out)


def run_layer(session: Session, problem: Problem, dtype: np.dtype) -> RunOutput:
    y = session.run({session.input_names[0]: np.asarray(problem.x).astype(dtype)})[0]
    out = RunOutput()
    out.add("forward", np.asarray(y), str(np.asarray(y).dtype))
    return out


def graph_view(model: onnx.ModelProto) -> GraphView:
    from normcheck.model.onnx_graph import type_info

    types, ranks, _ = type_info(model)
    return GraphView(
        list(model.graph.node),
        {t.name: t for t in model.graph.initializer},
        opsets_of(model.opset_import),
        "",
        types,
        ranks,
    )


def runner_for(
    model: onnx.ModelProto, g: GraphView, layer: NormLayer, x: np.ndarray, runtime: str = ONNXRUNTIME
) -> checks.LayerRunner | str:
    """The layer cut out of the model into its own session, ready to run on inputs of ``x``'s
    dtype and rank; why not, as a string (an "error: " prefix for a layer that cannot be loaded)."""
    framework = FRAMEWORK if runtime == ONNXRUNTIME else REFERENCE
    label = f"{layer.path} ({layer.kind})"
    if "/" in layer.path and layer.input not in g.producer and layer.input not in {i.name for i in model.graph.input}:
        return "inside a subgraph or function: not checked yet"
    found = onnx_setup(g, layer, x.ndim)
    if isinstance(found, str):
        return found
    setup = _shape_params(found, tuple(x.shape))
    if isinstance(setup, str):
        return setup
    if runtime != ONNXRUNTIME:
        setup = replace(setup, known_impl=None)  # ONNX Runtime's documented defects are not the evaluator's
    if setup.notes:
        label = f"{layer.path} ({layer.kind}; {'; '.join(setup.notes)})"
    elem = int(helper.np_dtype_to_tensor_dtype(x.dtype))
    sub = layer_model(model, layer, elem)
    if isinstance(sub, str):
        return sub
    try:
        session = _session(sub, runtime)
    except Exception as e:
        return f"{ERROR_PREFIX}{runtime} could not load the layer's model: {checks.describe_error(e)}"
    dtype = x.dtype
    return checks.LayerRunner(setup, lambda problem: run_layer(session, problem, dtype), label, framework, runtime)


ERROR_PREFIX = "error: "


def check_layer(
    model: onnx.ModelProto,
    g: GraphView,
    layer: NormLayer,
    x: np.ndarray | None,
    kinds: tuple[str, ...],
    seed: int,
    runtime: str = ONNXRUNTIME,
) -> list[CheckResult]:
    label = f"{layer.path} ({layer.kind})"
    framework = FRAMEWORK if runtime == ONNXRUNTIME else REFERENCE
    if x is None:
        return [
            checks.layer_row(
                label, framework, "skip", "its input was not computed on this input", layer.op, layer.dtype
            )
        ]
    runner = runner_for(model, g, layer, x, runtime)
    if isinstance(runner, str):
        status = "error" if runner.startswith(ERROR_PREFIX) else "skip"
        return [checks.layer_row(label, framework, status, runner.removeprefix(ERROR_PREFIX), layer.op, layer.dtype)]
    return runner.rows(x.astype(np.float64), kinds, seed, layer.path)


def check_onnx(
    model: onnx.ModelProto,
    inventory: Inventory,
    shapes: tuple[tuple[int, ...], ...],
    arrays: list[np.ndarray] | None,
    kinds: tuple[str, ...],
    seed: int,
    send: Callable[[Any], None],
    runtime: str = ONNXRUNTIME,
) -> None:
    """Capture every layer's input in one run, then send ("layer", rows) per layer in order."""
    feeds = model_feeds(model, shapes, arrays, seed)
    tensors = [layer.input for layer in inventory.layers if layer.input]
    values = capture(model, tensors, feeds, runtime)
    g = graph_view(model)
    for k, layer in enumerate(inventory.layers):
        x = None
        if layer.input:  # each activation dropped after its last reader
            later = {other.input for other in inventory.layers[k + 1 :]}
            x = values.get(layer.input) if layer.input in later else values.pop(layer.input, None)
        send(("layer", check_layer(model, g, layer, x, kinds, seed, runtime)))
