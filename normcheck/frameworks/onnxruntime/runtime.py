"""ONNX Runtime's plumbing shared by its implementations: the element types and how each dtype is
held in NumPy, the session options and providers, the inputs an ONNX norm takes. Imports no
other module of this folder."""

from __future__ import annotations

import re

import numpy as np
import onnxruntime as ort
from onnx import TensorProto

from normcheck.dtypes import quantize
from normcheck.frameworks.onnxruntime.facts import PARAM_INPUTS
from normcheck.ops._op import required
from normcheck.problem import Problem

ELEMENT_TYPES = {
    "float64": TensorProto.DOUBLE,
    "float32": TensorProto.FLOAT,
    "float16": TensorProto.FLOAT16,
    "bfloat16": TensorProto.BFLOAT16,
}
# How each dtype is held in NumPy: ORT's Python API has no bfloat16 array type, so bfloat16
# travels as its bit pattern in uint16, tagged with its ONNX type through OrtValue.
STORAGE = {"float64": np.float64, "float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}
NOT_IMPLEMENTED = re.compile(r"Could not find an implementation for (\w+)\((\d+)\)")


def session_options(threads: int = 1) -> ort.SessionOptions:
    """A fixed, quiet configuration: errors only, ``threads`` intra-op threads (verify uses one: the
    tensors are tiny, and the reductions then sum in one fixed order), ORT's default (full) graph
    optimization."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so


def providers(device: str) -> list:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    index = int(device.partition(":")[2] or 0)
    # ORT places a node its CUDA provider lacks on the CPU, as it does for any user
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


def to_storage(a: np.ndarray, dtype: str) -> np.ndarray:
    """A copy of ``a`` (float64, exact in ``dtype``) as ``dtype`` is held in NumPy."""
    if dtype == "bfloat16":
        bits = quantize(a, dtype).astype(np.float32).view(np.uint32) >> 16
        return bits.astype(np.uint16)
    return np.array(a, dtype=STORAGE[dtype])


def from_storage(a: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        return (a.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return a.astype(np.float64)


def ort_value(a: np.ndarray, dtype: str) -> ort.OrtValue:
    """An OrtValue of ``dtype`` on top of ``a``'s memory (a storage array)."""
    return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(a, ELEMENT_TYPES[dtype])


def affine_inputs(p: Problem) -> dict[str, np.ndarray]:
    """Scale (and bias) are required inputs: ones and zeros stand for no affine transform."""
    pshape = param_shape(p)
    weight = p.weight if p.weight is not None else np.ones(pshape)
    names = PARAM_INPUTS[p.op]
    feeds = {names[0]: weight}
    if p.op != "rms":
        feeds[names[1]] = p.bias if p.bias is not None else np.zeros(pshape)
    return feeds


def param_shape(p: Problem) -> tuple[int, ...]:
    if p.op in ("ln", "rms"):
        return tuple(p.shape[len(p.shape) - required(p.params.normalized_ndim, "normalized_ndim") :])
    return (p.shape[1],)
