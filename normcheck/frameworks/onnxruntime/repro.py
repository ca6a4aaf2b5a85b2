"""ONNX Runtime reproducers: the model the adapter builds with onnx.helper, run in a session
configured as the adapter's, as text. Imports no onnx. Forward only; beyond the five ops
(``COVERS``, what adapter.py's implementations declare):

- the one-node model of each op (adapter.py's OrtImplementation): batch norm runs each training
  batch with training_mode=1, chaining the updated running statistics into the next, then ``x``
  in training or inference mode; layer norm without bias (nobias) is fed zeros for B, as
  adapter.affine_inputs does (LayerNormalization's axis covers the trailing axes only: --axes
  does not run);
- the fused add + norm: one com.microsoft SkipSimplifiedLayerNormalization (add_rms) or
  SkipLayerNormalization (add_ln) node (OrtSkipNormImplementation), its outputs the norm and
  X + skip;
- FP8-quantized output (quantized.py): the norm, then QuantizeLinear in one opset-23 graph, the
  scale given (static) or computed in the graph per row or per tensor; q's bytes read as the
  adapter reads them, through ml_dtypes (a dependency of onnx).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from normcheck.frameworks.onnxruntime.facts import OPSETS, PARAM_INPUTS
from normcheck.ops.fused_add import FUSED_ADD
from normcheck.ops.layer_norm import NOBIAS
from normcheck.ops.quantize import QUANTIZED, QUANTIZED_CHECK, ROW, SCALE_CHECK, STATIC, Quantization
from normcheck.repro.call import QUANTIZED_DTYPE, ReproCall, Snippet, block, quoted

# What these reproducers write beyond the five plain ops (repro.call.extensions)
COVERS = frozenset({NOBIAS, FUSED_ADD, QUANTIZED})
# the stash_type variant's name, as the adapter writes it (the registry test checks they agree)
STASH_DOUBLE = "(stash_type=DOUBLE)"
# adapter.SKIP_OPS and quantized.py's names (tests/repro/test_numpy_onnx_kinds.py checks they agree)
SKIP_OPS = {"add_rms": "SkipSimplifiedLayerNormalization", "add_ln": "SkipLayerNormalization"}
QUANTIZE_LINEAR = " + QuantizeLinear"  # the quantized implementation's name after the norm's
QUANTIZED_OPSET = 23
FP8_TYPES = {"e4m3": "FLOAT8E4M3FN", "e5m2": "FLOAT8E5M2"}
SCALE = "fp8_scale"
ELEMENT_TYPES = {"float64": "DOUBLE", "float32": "FLOAT", "float16": "FLOAT16", "bfloat16": "BFLOAT16"}
STORAGE = {"float64": "np.float64", "float32": "np.float32", "float16": "np.float16", "bfloat16": "np.uint16"}
IMPORTS = ("import onnx", "import onnxruntime as ort", "from onnx import TensorProto, helper")
VERSION = 'f"onnxruntime {ort.__version__}, onnx {onnx.__version__}"'

HELPERS = '''\
ELEMENT = TensorProto.{element}
STORAGE = {storage}  # how the dtype is held in NumPy{storage_note}
PROVIDERS = {providers!r}


def session(model):
    """A session of ``model`` configured as normcheck's: errors only, one thread, sequential, full
    graph optimization."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=PROVIDERS)


def to_storage(a):
    {to_storage}


def from_storage(a):
    {from_storage}


def run_bound(sess, inputs, outputs):
    """Run ``sess`` with each (array, ONNX element type) of ``inputs`` and ``outputs`` bound as an
    OrtValue: the outputs are written into their arrays."""
    binding = sess.io_binding()
    for name, (a, element) in inputs.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy_with_onnx_type(a, element))
    for name, (buf, element) in outputs.items():
        binding.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy_with_onnx_type(buf, element))
    sess.run_with_iobinding(binding)


def run_model(sess, feeds, shapes):
    """Run on float64 feeds through OrtValues of the dtype; the outputs of ``shapes`` as float64."""
    inputs = {{name: (to_storage(a), ELEMENT) for name, a in feeds.items()}}
    outputs = {{name: (np.zeros(shape, dtype=STORAGE), ELEMENT) for name, shape in shapes.items()}}
    run_bound(sess, inputs, outputs)
    return {{name: from_storage(buf) for name, (buf, _) in outputs.items()}}
'''
TO_STORAGE = {
    True: "return (np.asarray(a, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)",
    False: "return np.array(a, dtype=STORAGE)",
}
FROM_STORAGE = {
    True: "return (a.astype(np.uint32) << 16).view(np.float32).astype(np.float64)",
    False: "return a.astype(np.float64)",
}

ONE_NODE = '''

OP_TYPE, OPSET = "{op_type}", {opset}
INPUTS = {inputs!r}
RANK, PARAM_RANK = {rank}, {param_rank}


def one_node(attributes, outputs):
    """A session of one {op_type} node, every dim symbolic."""
    inputs = [helper.make_tensor_value_info("X", ELEMENT, [None] * RANK)]
    inputs += [helper.make_tensor_value_info(n, ELEMENT, [None] * PARAM_RANK) for n in INPUTS[1:]]
    outs = [helper.make_tensor_value_info(n, ELEMENT, [None] * (RANK if n == "Y" else 1)) for n in outputs]
    node = helper.make_node(OP_TYPE, list(INPUTS), list(outputs), **attributes)
    graph = helper.make_graph([node], "{graph}", inputs, outs)
    opsets = [helper.make_opsetid("", OPSET)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model)
    return session(model)
'''

SKIP_NODE = '''

OP_TYPE = "{op_type}"
INPUTS = {inputs!r}
RANK = {rank}


def skip_node():
    """A session of one com.microsoft {op_type} node: inputs (X, skip, gamma[, beta]), outputs Y, the
    norm over the last axis of H = X + skip, and H (the node's fourth output)."""
    inputs = [helper.make_tensor_value_info(n, ELEMENT, [None] * RANK) for n in INPUTS[:2]]
    inputs += [helper.make_tensor_value_info(n, ELEMENT, [None]) for n in INPUTS[2:]]
    outputs = [helper.make_tensor_value_info(n, ELEMENT, [None] * RANK) for n in ("Y", "H")]
    node = helper.make_node(OP_TYPE, list(INPUTS), ["Y", "", "", "H"], domain="com.microsoft", epsilon={eps!r})
    graph = helper.make_graph([node], "{graph}", inputs, outputs)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return session(helper.make_model(graph, opset_imports=opsets, ir_version=8))
'''

QUANTIZED_GRAPH = '''

SHAPE, NORMALIZED = {shape!r}, {k}  # x's shape and the trailing axes the norm normalizes
ROWS, WIDTH = {rows}, {width}
PARAMS = {params!r}  # the norm's inputs after X
FP8_TYPE = TensorProto.{fp8_type}
FP8_VALUES = ml_dtypes.{fp8_dtype}  # q's bytes read as the adapter reads them


def quantized_graph():
    """A session of {norm} over the last NORMALIZED axes in the input dtype, then
    QuantizeLinear to {fp8_dtype} (saturate=1) with {scale_words}, on y in float32 reshaped
    to (ROWS, WIDTH)."""
    inputs = [helper.make_tensor_value_info("X", ELEMENT, list(SHAPE))]
    inputs += [helper.make_tensor_value_info(n, ELEMENT, list(SHAPE[-NORMALIZED:])) for n in PARAMS]
    consts = [
        helper.make_tensor("rows_by_width", TensorProto.INT64, [2], [ROWS, WIDTH]),
        helper.make_tensor("shape", TensorProto.INT64, [len(SHAPE)], list(SHAPE)),
        helper.make_tensor("fp8_max", TensorProto.FLOAT, [], [{fp8_max!r}]),
        helper.make_tensor("min_scale", TensorProto.FLOAT, [], [{min_scale!r}]),
        helper.make_tensor("row_axis", TensorProto.INT64, [1], [1]),
    ]
    nodes = [
        helper.make_node("{norm}", ["X", *PARAMS], ["Y"], axis=-NORMALIZED, epsilon={eps!r}),
        helper.make_node("Cast", ["Y"], ["Y32"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["Y32", "rows_by_width"], ["Y2"]),
    ]
    outputs = [helper.make_tensor_value_info("Q", FP8_TYPE, list(SHAPE))]
{scale_lines}
    nodes += [
        helper.make_node("QuantizeLinear", ["Y2", "{scale}"], ["Q2"], saturate=1, output_dtype=FP8_TYPE{axis}),
        helper.make_node("Reshape", ["Q2", "shape"], ["Q"]),
    ]
    graph = helper.make_graph(nodes, "{graph}", inputs, outputs, initializer=consts)
    opsets = [helper.make_opsetid("", {opset})]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model)
    return session(model)
'''
STATIC_SCALE = """\
    inputs.append(helper.make_tensor_value_info("{scale}", TensorProto.FLOAT, []))  # the static scale, given"""
DYNAMIC_SCALE = """\
    nodes += [  # the scale: max(amax(|y|) / fp8_max, min_scale){per}
        helper.make_node("Abs", ["Y2"], ["A"]),
        helper.make_node("ReduceMax", {reduce!r}, ["amax"], keepdims=0),
        helper.make_node("Div", ["amax", "fp8_max"], ["ratio"]),
        helper.make_node("Max", ["ratio", "min_scale"], ["{scale}"]),
    ]
    outputs.append(helper.make_tensor_value_info("{scale}", TensorProto.FLOAT, {shape!r}))"""


# (import lines beyond onnx and onnxruntime, the code after the helpers, pip distributions beyond them)
Made = tuple[tuple[str, ...], str, tuple[str, ...]]


def snippet(call: ReproCall) -> Snippet | str:
    """The script's ONNX Runtime part for ``call``, or why there is none."""
    if call.user is not None:
        return "ONNX Runtime has no user forms"
    writer = _writers(call.op).get(call.impl)
    if writer is None:
        return f"ONNX Runtime has no implementation named {call.impl!r}"
    imports, code, needs = writer(call)
    return Snippet((*IMPORTS, *imports), _helpers(call) + code, VERSION, ("onnx", "onnxruntime", *needs))


def _writers(op: str) -> dict[str, Callable[[ReproCall], Made]]:
    """The op's implementations by the names the adapter gives them, each with what writes its run."""
    if op in SKIP_OPS:
        return {f"com.microsoft.{SKIP_OPS[op]}": _skip}
    if op not in OPSETS:
        return {}
    base = f"onnx.{OPSETS[op][0]}"
    return {base: _one_node, base + STASH_DOUBLE: _one_node, base + QUANTIZE_LINEAR: _quantized}


def _helpers(call: ReproCall) -> str:
    bf16 = call.dtype == "bfloat16"
    return HELPERS.format(
        element=ELEMENT_TYPES[call.dtype],
        storage=STORAGE[call.dtype],
        storage_note=": bfloat16 as its bit pattern in uint16" if bf16 else "",
        providers=_providers(call.device),
        to_storage=TO_STORAGE[bf16],
        from_storage=FROM_STORAGE[bf16],
    )


def _providers(device: str) -> list:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    index = int(device.partition(":")[2] or 0)
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


def _run(lines: list[str]) -> str:
    return "\n\ndef run(data):\n" + block(lines)


def _affine(call: ReproCall) -> list[str]:
    """adapter.affine_inputs: scale and bias are required inputs, ones and zeros standing for none
    (zeros for the nobias variant's B)."""
    names = PARAM_INPUTS[call.op]
    pshape = call.normalized_shape if call.op in ("ln", "rms") else (call.shape[1],)
    weight = 'data["weight"]' if call.params.affine else f"np.ones({pshape!r})"
    items = [f"{names[0]!r}: {weight}"]
    if call.op != "rms":
        items.append(f"{names[1]!r}: " + ('data["bias"]' if call.has_bias else f"np.zeros({pshape!r})"))
    return ["affine = {" + ", ".join(items) + "}"]


# -- the one-node model of each op (adapter.OrtImplementation) -------------------------------


def _one_node(call: ReproCall) -> Made:
    op_type, opset = OPSETS[call.op]
    code = ONE_NODE.format(
        op_type=op_type,
        opset=opset,
        inputs=("X", *PARAM_INPUTS[call.op]),
        rank=len(call.shape),
        param_rank=call.params.normalized_ndim if call.op in ("ln", "rms") else 1,
        graph=f"normcheck_{call.op}",
    )
    body = _batch_norm(call) if call.op == "bn" else _one(call)
    return (), code + _run(_affine(call) + body), ()


def _attributes(call: ReproCall, training: bool) -> str:
    """adapter.attributes: the node's attributes, sorted by name, as a dict literal."""
    attrs: dict[str, str] = {"epsilon": repr(call.eps)}
    if call.op == "bn":
        attrs.update(momentum=repr(call.framework_momentum), training_mode=repr(int(training)))
    elif call.op in ("ln", "rms"):
        attrs["axis"] = repr(-(call.params.normalized_ndim or 0))
    elif call.op == "gn":
        attrs["num_groups"] = repr(call.params.groups)
    if call.impl.endswith(STASH_DOUBLE):
        attrs["stash_type"] = "TensorProto.DOUBLE"
    return "{" + ", ".join(f"{k!r}: {v}" for k, v in sorted(attrs.items())) + "}"


def _one(call: ReproCall) -> list[str]:
    return [
        f'sess = one_node({_attributes(call, False)}, ("Y",))',
        'y = run_model(sess, {"X": data["x"], **affine}, {"Y": data["x"].shape})["Y"]',
        'return {"forward": y}',
    ]


def _batch_norm(call: ReproCall) -> list[str]:
    """adapter._run_batch_norm."""
    lines = [
        f'train = one_node({_attributes(call, True)}, ("Y", "running_mean", "running_var"))',
        f'shapes = {{"Y": data["x"].shape, "running_mean": ({call.shape[1]},), "running_var": ({call.shape[1]},)}}',
        'rm, rv = data["running_mean"], data["running_var"]',
        'for batch in data["steps"]:',
        '    got = run_model(train, {"X": batch, **affine, "input_mean": rm, "input_var": rv}, shapes)',
        '    rm, rv = got["running_mean"], got["running_var"]',
        'feeds = {"X": data["x"], **affine, "input_mean": rm, "input_var": rv}',
    ]
    if call.params.mode == "train":
        lines += [
            "got = run_model(train, feeds, shapes)",
            'y, rm, rv = got["Y"], got["running_mean"], got["running_var"]',
        ]
    else:
        lines += [
            f'infer = one_node({_attributes(call, False)}, ("Y",))',
            'y = run_model(infer, feeds, {"Y": data["x"].shape})["Y"]',
        ]
    return [*lines, 'return {"forward": y, "running_mean": rm, "running_var": rv}']


# -- fused add + norm: the com.microsoft contrib node (adapter.OrtSkipNormImplementation) -----


def _skip(call: ReproCall) -> Made:
    """adapter.skip_model and OrtSkipNormImplementation.feeds: gamma ones where the case has no
    weight (it is required), beta for add_ln with a bias."""
    beta = call.op == "add_ln" and call.has_bias
    names = ("X", "skip", "gamma", *(("beta",) if beta else ()))
    code = SKIP_NODE.format(
        op_type=SKIP_OPS[call.op], inputs=names, rank=len(call.shape), eps=call.eps, graph=f"normcheck_{call.op}"
    )
    gamma = 'data["weight"]' if call.params.affine else f"np.ones({call.shape[-1:]!r})"
    feeds = [
        '"X": data["x"]',
        '"skip": data["residual"]',
        f'"gamma": {gamma}',
        *(['"beta": data["bias"]'] if beta else []),
    ]
    lines = [
        "feeds = {" + ", ".join(feeds) + "}",
        'got = run_model(skip_node(), feeds, {"Y": data["x"].shape, "H": data["x"].shape})',
        'return {"forward": got["Y"], "residual_out": got["H"]}',
    ]
    return (), code + _run(lines), ()


# -- FP8-quantized output: the norm, then QuantizeLinear (quantized.py) ----------------------


def _quant(call: ReproCall) -> Quantization:
    if call.params.quant is None:
        raise ValueError("the quantized graph runs FP8-quantized cases only")
    return call.params.quant


def _rows(call: ReproCall) -> tuple[int, int]:
    """(rows, elements per row): y as QuantizeLinear takes it."""
    k = call.params.normalized_ndim or 0
    return math.prod(call.shape[: len(call.shape) - k]), math.prod(call.shape[len(call.shape) - k :])


def _quantized_scale(call: ReproCall) -> tuple[str, str, tuple[int, ...] | None]:
    """quantized_model's scale: in words, the lines that add it to the graph, and the shape
    normcheck reads a returned scale in (None: a static scale, given, not returned)."""
    q, k = _quant(call), call.params.normalized_ndim or 0
    if q.scale == STATIC:
        return "the scale given", STATIC_SCALE.format(scale=SCALE), None
    per_row = q.scale == ROW
    lines = DYNAMIC_SCALE.format(
        per=", per row" if per_row else ", over the tensor",
        reduce=["A", "row_axis"] if per_row else ["A"],
        scale=SCALE,
        shape=[_rows(call)[0]] if per_row else [],
    )
    words = f"its scale computed {'per row' if per_row else 'over the tensor'}"
    return words, lines, (*call.shape[: len(call.shape) - k], *([1] * k)) if per_row else ()


def _quantized(call: ReproCall) -> Made:
    """quantized.quantized_model and OrtQuantizedImplementation.run."""
    q = _quant(call)
    words, scale_lines, scale_shape = _quantized_scale(call)
    rows, width = _rows(call)
    code = QUANTIZED_GRAPH.format(
        shape=call.shape,
        k=call.params.normalized_ndim,
        rows=rows,
        width=width,
        params=PARAM_INPUTS[call.op],
        fp8_type=FP8_TYPES[q.format],
        fp8_dtype=q.fmt.dtype,
        norm=OPSETS[call.op][0],
        scale_words=words,
        fp8_max=q.fmt.max,
        min_scale=q.fmt.min_scale,
        eps=call.eps,
        scale_lines=scale_lines,
        scale=SCALE,
        axis=", axis=0" if q.scale == ROW else "",
        graph=f"normcheck_{call.op}_fp8",
        opset=QUANTIZED_OPSET,
    )
    run = _run(_affine(call) + _quantized_body(q, scale_shape))
    return ("import ml_dtypes  # onnx's own dependency: reads FP8 bytes",), code + run, ("ml_dtypes",)


def _quantized_body(q: Quantization, scale_shape: tuple[int, ...] | None) -> list[str]:
    """OrtQuantizedImplementation.run: the inputs in the dtype (a static scale in float32), q's
    bytes and a computed scale in float32 bound as outputs; q as float64 with its dtype's name."""
    static = f'inputs["{SCALE}"] = (np.asarray(data["quant_scale"], dtype=np.float32).reshape(()), TensorProto.FLOAT)'
    computed = (
        f'outputs["{SCALE}"] = (np.zeros({"(ROWS,)" if q.scale == ROW else "()"}, dtype=np.float32), TensorProto.FLOAT)'
    )
    returned = f'result[{quoted(SCALE_CHECK)}] = outputs["{SCALE}"][0].reshape({scale_shape!r}).astype(np.float64)'
    return [
        'inputs = {name: (to_storage(a), ELEMENT) for name, a in {"X": data["x"], **affine}.items()}',
        *([static] if scale_shape is None else []),
        'outputs = {"Q": (np.zeros(SHAPE, dtype=np.uint8), FP8_TYPE)}',
        *([computed] if scale_shape is not None else []),
        "run_bound(quantized_graph(), inputs, outputs)",
        'q = outputs["Q"][0].view(FP8_VALUES).astype(np.float64)',
        f"result = {{{quoted(QUANTIZED_CHECK)}: q, {quoted(QUANTIZED_DTYPE)}: {quoted(q.fmt.dtype)}}}",
        *([returned] if scale_shape is not None else []),
        "return result",
    ]
