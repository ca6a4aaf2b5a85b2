"""ONNX Runtime: a norm with FP8-quantized output (``--quantize``), as an exporter writes one: the
norm node (LayerNormalization, RMSNormalization) in the input dtype, then QuantizeLinear to
float8e4m3fn or float8e5m2 with ``saturate=1`` (values beyond the format's max clamp to it), all
in one opset-23 model.

The scale: given (static, a float32 scalar input), or computed in the graph in float32 as vLLM's
kernels do, ``max(amax(|y|) / fp8_max, 1 / (fp8_max * 512))`` over the tensor (one scalar) or
per row (y reshaped to (rows, normalized elements), QuantizeLinear per axis 0). The outputs are
the FP8 values (read through ml_dtypes) and, for a dynamic scale, the scale, as verify's
quantized check takes them (normcheck.verify.quantized). Forward only; the CPU provider runs
every node.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from normcheck.frameworks.base import Implementation, RunOutput, Unsupported
from normcheck.frameworks.onnxruntime.facts import OPSETS, PARAM_INPUTS
from normcheck.frameworks.onnxruntime.runtime import (
    ELEMENT_TYPES,
    NOT_IMPLEMENTED,
    affine_inputs,
    providers,
    session_options,
    to_storage,
)
from normcheck.ops._op import required
from normcheck.ops.quantize import QUANTIZED, QUANTIZED_CHECK, ROW, SCALE_CHECK, STATIC, Quantization
from normcheck.problem import Problem

OPSET = 23  # RMSNormalization's; LayerNormalization (17) and QuantizeLinear's float8 (19) are in it
FP8_TYPES = {"e4m3": TensorProto.FLOAT8E4M3FN, "e5m2": TensorProto.FLOAT8E5M2}
SCALE = "fp8_scale"  # the graph's scale, given or computed (RMSNormalization's weight is "scale")
_SESSIONS: dict[tuple, ort.InferenceSession | str] = {}


def quantized_model(
    op: str, dtype: str, shape: tuple[int, ...], k: int, q: Quantization, eps: float
) -> onnx.ModelProto:
    """The norm of x over its last ``k`` axes, then QuantizeLinear to ``q``'s format with its scale."""
    elem, fp8 = ELEMENT_TYPES[dtype], FP8_TYPES[q.format]
    rows, width = math.prod(shape[: len(shape) - k]), math.prod(shape[len(shape) - k :])
    params = PARAM_INPUTS[op]
    inputs = [helper.make_tensor_value_info("X", elem, list(shape))]
    inputs += [helper.make_tensor_value_info(n, elem, list(shape[len(shape) - k :])) for n in params]
    consts = [
        helper.make_tensor("rows_by_width", TensorProto.INT64, [2], [rows, width]),
        helper.make_tensor("shape", TensorProto.INT64, [len(shape)], list(shape)),
        helper.make_tensor("fp8_max", TensorProto.FLOAT, [], [q.fmt.max]),
        helper.make_tensor("min_scale", TensorProto.FLOAT, [], [q.fmt.min_scale]),
        helper.make_tensor("row_axis", TensorProto.INT64, [1], [1]),
    ]
    nodes = [
        helper.make_node(OPSETS[op][0], ["X", *params], ["Y"], axis=-k, epsilon=eps),
        helper.make_node("Cast", ["Y"], ["Y32"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["Y32", "rows_by_width"], ["Y2"]),
    ]
    outputs = [helper.make_tensor_value_info("Q", fp8, list(shape))]
    quantize_args: dict[str, int] = {"saturate": 1, "output_dtype": fp8}
    if q.scale == STATIC:
        inputs.append(helper.make_tensor_value_info(SCALE, TensorProto.FLOAT, []))
    else:
        per_row = q.scale == ROW
        reduce = ["A", "row_axis"] if per_row else ["A"]
        nodes += [
            helper.make_node("Abs", ["Y2"], ["A"]),
            helper.make_node("ReduceMax", reduce, ["amax"], keepdims=0),
            helper.make_node("Div", ["amax", "fp8_max"], ["ratio"]),
            helper.make_node("Max", ["ratio", "min_scale"], [SCALE]),
        ]
        outputs.append(helper.make_tensor_value_info(SCALE, TensorProto.FLOAT, [rows] if per_row else []))
        if per_row:
            quantize_args["axis"] = 0
    nodes += [
        helper.make_node("QuantizeLinear", ["Y2", SCALE], ["Q2"], **quantize_args),
        helper.make_node("Reshape", ["Q2", "shape"], ["Q"]),
    ]
    graph = helper.make_graph(nodes, f"normcheck_{op}_fp8", inputs, outputs, initializer=consts)
    opsets = [helper.make_opsetid("", OPSET)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model)
    return model


class OrtQuantizedImplementation(Implementation):
    """``onnx.<Norm> + QuantizeLinear``: planned for quantized cases only (``requires``)."""

    framework = "onnxruntime"
    extensions = frozenset({QUANTIZED})
    requires = frozenset({QUANTIZED})

    def __init__(self, op: str) -> None:
        self.op = op
        self.name = f"onnx.{OPSETS[op][0]} + QuantizeLinear"

    def unsupported(self, problem: Problem, layout: str) -> str | None:
        if problem.params.quant is None:
            return "it runs FP8-quantized cases only (--quantize)"
        if problem.x.size == 0:
            return "QuantizeLinear's scale needs at least one row and one element per row"
        return None

    def missing_checks(self, problem: Problem) -> dict[str, str]:
        return {}

    def session(self, p: Problem, device: str, threads: int = 1) -> ort.InferenceSession:
        """The case's session, cached per op, dtype, shape, format, scale, eps, device and threads."""
        q = p.params.quant
        if q is None:
            raise Unsupported("it runs FP8-quantized cases only (--quantize)")
        k = required(p.params.normalized_ndim, "normalized_ndim")
        key = (self.op, p.dtype, p.shape, k, q, p.eps, device, threads)
        if key not in _SESSIONS:
            model = quantized_model(self.op, p.dtype, p.shape, k, q, p.eps).SerializeToString()
            try:
                _SESSIONS[key] = ort.InferenceSession(model, session_options(threads), providers=providers(device))
            except Exception as e:
                m = NOT_IMPLEMENTED.search(str(e))
                if m is None:
                    raise
                _SESSIONS[key] = f"onnxruntime has no kernel for {m.group(1)}({m.group(2)}) in {p.dtype}"
        found = _SESSIONS[key]
        if isinstance(found, str):
            raise Unsupported(found)
        return found

    def feeds(self, p: Problem) -> dict[str, tuple[np.ndarray, int]]:
        """Each input as (storage array, ONNX element type)."""
        feeds = {name: (to_storage(a, p.dtype), ELEMENT_TYPES[p.dtype]) for name, a in self.affine(p).items()}
        if p.quant_scale is not None:
            feeds[SCALE] = (np.asarray(p.quant_scale, dtype=np.float32).reshape(()), TensorProto.FLOAT)
        return feeds

    def affine(self, p: Problem) -> dict[str, np.ndarray]:
        return {"X": p.x, **affine_inputs(p)}

    def buffers(self, p: Problem) -> dict[str, tuple[np.ndarray, int]]:
        """The outputs' buffers: the FP8 values as their bytes, and a dynamic scale in float32."""
        q = p.params.quant
        if q is None:
            raise Unsupported("it runs FP8-quantized cases only (--quantize)")
        out = {"Q": (np.zeros(p.shape, dtype=np.uint8), FP8_TYPES[q.format])}
        if q.scale != STATIC:
            k = required(p.params.normalized_ndim, "normalized_ndim")
            rows = math.prod(p.shape[: len(p.shape) - k])
            out[SCALE] = (np.zeros((rows,) if q.scale == ROW else (), dtype=np.float32), TensorProto.FLOAT)
        return out

    def run(self, problem: Problem, layout: str, device: str) -> RunOutput:
        p = problem
        q = p.params.quant
        if q is None:
            raise Unsupported("it runs FP8-quantized cases only (--quantize)")
        sess = self.session(p, device)
        binding = sess.io_binding()
        feeds, buffers = self.feeds(p), self.buffers(p)
        for name, (a, elem) in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy_with_onnx_type(a, elem))
        for name, (buf, elem) in buffers.items():
            binding.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy_with_onnx_type(buf, elem))
        sess.run_with_iobinding(binding)
        out = RunOutput()
        values = buffers["Q"][0].view(q.fmt.np_type).astype(np.float64)
        out.add(QUANTIZED_CHECK, values, q.fmt.dtype)
        if SCALE in buffers:
            k = required(p.params.normalized_ndim, "normalized_ndim")
            scale = buffers[SCALE][0]
            shape = (*p.shape[: len(p.shape) - k], *([1] * k)) if q.scale == ROW else ()
            out.add(SCALE_CHECK, scale.reshape(shape).astype(np.float64), "float32")
        return out
