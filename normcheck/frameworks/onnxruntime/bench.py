"""ONNX Runtime: the verify adapter's one-node models run by an InferenceSession through an
IOBinding; inputs bound once, outputs written into preallocated buffers; forward only."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from normcheck.bench.records import FORWARD
from normcheck.bench.target import Target
from normcheck.frameworks.base import Implementation, Unsupported
from normcheck.frameworks.onnxruntime.adapter import (
    ELEMENT_TYPES,
    GRAD_REASON,
    STORAGE,
    ModelSpec,
    OrtImplementation,
    OrtSkipNormImplementation,
    affine_inputs,
    framework,
    ort_value,
    session,
    to_storage,
)
from normcheck.frameworks.onnxruntime.quantized import OrtQuantizedImplementation
from normcheck.names import CONTIGUOUS, Layout
from normcheck.problem import Problem

MODES = {"eager": ("session",), "compiled": ("session",)}
OOM, SKIP = "oom", "skip"
RUNNING = ("Y", "running_mean", "running_var")
OOM_MESSAGES = ("failed to allocate", "out of memory", "bad_alloc", "bad allocation")

_threads = [1]


def implementations(op: str) -> list[Implementation]:
    """The adapter's implementations of ``op``."""
    return framework().implementations(op)


def device_problem(device: str) -> str | None:
    return framework().device_problem(device)


def set_threads(n: int) -> int:
    """Sessions created from now on use ``n`` intra-op threads."""
    _threads[0] = n
    return n


def layout(impl: Implementation, shape: tuple[int, ...]) -> Layout:
    return CONTIGUOUS


def classify(e: BaseException) -> str | None:
    """OOM for an allocation failure, SKIP for a missing kernel (NOT_IMPLEMENTED), None otherwise."""
    text = str(e)
    if isinstance(e, MemoryError) or any(m in text.lower() for m in OOM_MESSAGES):
        return OOM
    if isinstance(e, ort_errors.NotImplemented) or "NOT_IMPLEMENTED" in text:
        return SKIP
    return None


def build(impl: Implementation, problem: Problem, pass_: str, variant: str, device: str) -> Target:
    if not isinstance(impl, OrtImplementation | OrtSkipNormImplementation | OrtQuantizedImplementation):
        raise Unsupported(f"{impl.name} is not an ONNX Runtime implementation")
    if pass_ != FORWARD:
        raise Unsupported(GRAD_REASON)
    device_reason = device_problem(device)
    if device_reason:
        raise Unsupported(device_reason)
    reason = impl.unsupported(problem, CONTIGUOUS)
    if reason:
        raise Unsupported(reason)
    if isinstance(impl, OrtQuantizedImplementation):
        return _quantized_target(impl, problem, variant, device)
    if isinstance(impl, OrtSkipNormImplementation):  # the fused add + norm: Y and X + skip out
        sess = impl.session(problem, device, _threads[0])
        feeds, shapes = impl.feeds(problem), {"Y": problem.shape, "H": problem.shape}
    else:
        spec, feeds, shapes = model_case(impl, problem, device)
        sess = session(spec, _threads[0])
    if device != "cpu" and "CUDAExecutionProvider" not in sess.get_providers():
        raise Unsupported("onnxruntime could not start its CUDAExecutionProvider here")
    binding = sess.io_binding()
    index = int(device.partition(":")[2] or 0)
    keep: list[Any] = [sess, binding]
    for name, a in feeds.items():
        value = input_value(to_storage(a, problem.dtype), problem.dtype, device, index, keep)
        binding.bind_ortvalue_input(name, value)
    outputs = {name: output_value(shape, problem.dtype, device, index, keep) for name, shape in shapes.items()}
    for name, value in outputs.items():
        binding.bind_ortvalue_output(name, value)

    def call() -> dict[str, Any]:
        sess.run_with_iobinding(binding)
        return outputs

    sync = (lambda out: binding.synchronize_outputs()) if device != "cpu" else (lambda out: None)
    return Target(call, sync=sync, mode=variant, compiled=False, layout=CONTIGUOUS, keep=keep)


def _quantized_target(impl: OrtQuantizedImplementation, p: Problem, variant: str, device: str) -> Target:
    """The norm + QuantizeLinear session, its inputs and outputs bound once (on the CPU: the FP8
    values' bytes and the scale in NumPy buffers); each call runs it."""
    if device != "cpu":
        raise Unsupported("the FP8-quantized norm is timed on the CPU only")
    sess = impl.session(p, device, _threads[0])
    binding = sess.io_binding()
    keep: list[Any] = [sess, binding]
    outputs = impl.buffers(p)
    for name, (a, elem) in {**impl.feeds(p), **outputs}.items():
        value = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(a, elem)
        keep += [a, value]
        bind = binding.bind_ortvalue_output if name in outputs else binding.bind_ortvalue_input
        bind(name, value)

    def call() -> Any:
        sess.run_with_iobinding(binding)
        return binding

    return Target(call, sync=lambda out: None, mode=variant, compiled=False, layout=CONTIGUOUS, keep=keep)


def model_case(
    impl: OrtImplementation, p: Problem, device: str
) -> tuple[ModelSpec, dict[str, np.ndarray], dict[str, tuple[int, ...]]]:
    """The model, its float64 feeds and its outputs' shapes; batch norm in training mode is the
    training_mode=1 model that also outputs the updated running statistics."""
    feeds = {"X": p.x, **affine_inputs(p)}
    if p.op != "bn":
        return impl.model_spec(p, device), feeds, {"Y": p.shape}
    channels = (p.shape[1],)
    running = p.params.running_stats
    feeds["input_mean"], feeds["input_var"] = (
        p.initial_running() if running else (np.zeros(channels), np.ones(channels))
    )
    if running and p.params.mode == "eval":
        return impl.model_spec(p, device), feeds, {"Y": p.shape}
    outputs = RUNNING if running else ("Y",)
    shapes = {name: p.shape if name == "Y" else channels for name in outputs}
    return impl.model_spec(p, device, True, outputs), feeds, shapes


def input_value(a: np.ndarray, dtype: str, device: str, index: int, keep: list[Any]) -> ort.OrtValue:
    """``a`` (a storage array) as an OrtValue on ``device``; on the CPU it borrows ``a``'s memory."""
    if device == "cpu":
        keep.append(a)
        value = ort_value(a, dtype)
    elif dtype == "bfloat16":
        # a uint16 array would make a uint16 tensor: allocate the bfloat16 one, then copy the bits in
        value = ort.OrtValue.ortvalue_from_shape_and_type(list(a.shape), ELEMENT_TYPES[dtype], "cuda", index)
        value.update_inplace(a)
    else:
        value = ort.OrtValue.ortvalue_from_numpy(a, "cuda", index)
    keep.append(value)
    return value


def output_value(shape: tuple[int, ...], dtype: str, device: str, index: int, keep: list[Any]) -> ort.OrtValue:
    """A preallocated output: a storage array on the CPU, device memory on CUDA."""
    if device == "cpu":
        buffer = np.zeros(shape, dtype=STORAGE[dtype])
        keep.append(buffer)
        value = ort_value(buffer, dtype)
    else:
        value = ort.OrtValue.ortvalue_from_shape_and_type(list(shape), ELEMENT_TYPES[dtype], "cuda", index)
    keep.append(value)
    return value
