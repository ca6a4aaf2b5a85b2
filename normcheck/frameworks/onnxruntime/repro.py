"""ONNX Runtime reproducers: the one-node model the adapter builds with onnx.helper, run in a
session configured as the adapter's (adapter.py's OrtImplementation), as text. Imports no onnx.

Forward only; batch norm runs each training batch with training_mode=1, chaining the updated
running statistics into the next, then ``x`` in training or inference mode.
"""

from __future__ import annotations

from normcheck.frameworks.onnxruntime.facts import OPSETS, PARAM_INPUTS
from normcheck.repro.call import ReproCall, Snippet, block

# the stash_type variant's name, as the adapter writes it (the registry test checks they agree)
STASH_DOUBLE = "(stash_type=DOUBLE)"
ELEMENT_TYPES = {"float64": "DOUBLE", "float32": "FLOAT", "float16": "FLOAT16", "bfloat16": "BFLOAT16"}
STORAGE = {"float64": "np.float64", "float32": "np.float32", "float16": "np.float16", "bfloat16": "np.uint16"}
IMPORTS = ("import onnx", "import onnxruntime as ort", "from onnx import TensorProto, helper")

HELPERS = '''\
ELEMENT = TensorProto.{element}
STORAGE = {storage}  # how the dtype is held in NumPy{storage_note}
OP_TYPE, OPSET = "{op_type}", {opset}
INPUTS = {inputs!r}
RANK, PARAM_RANK = {rank}, {param_rank}
PROVIDERS = {providers!r}


def session(attributes, outputs):
    """A session of one {op_type} node, every dim symbolic, configured as normcheck's: errors
    only, one thread, sequential, full graph optimization."""
    inputs = [helper.make_tensor_value_info("X", ELEMENT, [None] * RANK)]
    inputs += [helper.make_tensor_value_info(n, ELEMENT, [None] * PARAM_RANK) for n in INPUTS[1:]]
    outs = [helper.make_tensor_value_info(n, ELEMENT, [None] * (RANK if n == "Y" else 1)) for n in outputs]
    node = helper.make_node(OP_TYPE, list(INPUTS), list(outputs), **attributes)
    graph = helper.make_graph([node], "{graph}", inputs, outs)
    opsets = [helper.make_opsetid("", OPSET)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model)
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


def run_model(sess, feeds, shapes):
    """Run on float64 feeds through OrtValues of the dtype; the outputs of ``shapes`` as float64."""
    binding = sess.io_binding()
    arrays = {{name: to_storage(a) for name, a in feeds.items()}}
    buffers = {{name: np.zeros(shape, dtype=STORAGE) for name, shape in shapes.items()}}
    for name, a in arrays.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy_with_onnx_type(a, ELEMENT))
    for name, buf in buffers.items():
        binding.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy_with_onnx_type(buf, ELEMENT))
    sess.run_with_iobinding(binding)
    return {{name: from_storage(buf) for name, buf in buffers.items()}}
'''
TO_STORAGE = {
    True: "return (np.asarray(a, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)",
    False: "return np.array(a, dtype=STORAGE)",
}
FROM_STORAGE = {
    True: "return (a.astype(np.uint32) << 16).view(np.float32).astype(np.float64)",
    False: "return a.astype(np.float64)",
}


def snippet(call: ReproCall) -> Snippet | str:
    """The script's ONNX Runtime part for ``call``, or why there is none."""
    if call.user is not None:
        return "ONNX Runtime has no user forms"
    op_type, opset = OPSETS[call.op]
    base = f"onnx.{op_type}"
    if call.impl not in (base, base + STASH_DOUBLE):
        return f"ONNX Runtime has no implementation named {call.impl!r}"
    bf16 = call.dtype == "bfloat16"
    helpers = HELPERS.format(
        element=ELEMENT_TYPES[call.dtype],
        storage=STORAGE[call.dtype],
        storage_note=": bfloat16 as its bit pattern in uint16" if bf16 else "",
        op_type=op_type,
        opset=opset,
        inputs=("X", *PARAM_INPUTS[call.op]),
        rank=len(call.shape),
        param_rank=call.params.normalized_ndim if call.op in ("ln", "rms") else 1,
        providers=_providers(call.device),
        graph=f"normcheck_{call.op}",
        to_storage=TO_STORAGE[bf16],
        from_storage=FROM_STORAGE[bf16],
    )
    body = _batch_norm(call) if call.op == "bn" else _one(call)
    code = helpers + "\n\ndef run(data):\n" + block(_affine(call) + body)
    return Snippet(IMPORTS, code, 'f"onnxruntime {ort.__version__}, onnx {onnx.__version__}"', ("onnx", "onnxruntime"))


def _providers(device: str) -> list:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    index = int(device.partition(":")[2] or 0)
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


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


def _affine(call: ReproCall) -> list[str]:
    """adapter.affine_inputs: scale and bias are required inputs, ones and zeros standing for none."""
    names = PARAM_INPUTS[call.op]
    pshape = call.normalized_shape if call.op in ("ln", "rms") else (call.shape[1],)
    weight = 'data["weight"]' if call.params.affine else f"np.ones({pshape!r})"
    items = [f"{names[0]!r}: {weight}"]
    if call.op != "rms":
        items.append(f"{names[1]!r}: " + ('data["bias"]' if call.params.affine else f"np.zeros({pshape!r})"))
    return ["affine = {" + ", ".join(items) + "}"]


def _one(call: ReproCall) -> list[str]:
    return [
        f'sess = session({_attributes(call, False)}, ("Y",))',
        'y = run_model(sess, {"X": data["x"], **affine}, {"Y": data["x"].shape})["Y"]',
        'return {"forward": y}',
    ]


def _batch_norm(call: ReproCall) -> list[str]:
    """adapter._run_batch_norm."""
    lines = [
        f'train = session({_attributes(call, True)}, ("Y", "running_mean", "running_var"))',
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
            f'infer = session({_attributes(call, False)}, ("Y",))',
            'y = run_model(infer, feeds, {"Y": data["x"].shape})["Y"]',
        ]
    return [*lines, 'return {"forward": y, "running_mean": rm, "running_var": rv}']
