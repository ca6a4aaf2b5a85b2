"""ONNX Runtime: a one-node ONNX model per op, built with onnx.helper; forward only, CPU and CUDA."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from normcheck.conventions import Convention
from normcheck.frameworks.base import Framework, Implementation, RunOutput, Unsupported
from normcheck.frameworks.onnxruntime.facts import KNOWN_ISSUES, ONNXRUNTIME, OPSETS, PARAM_INPUTS
from normcheck.frameworks.onnxruntime.quantized import OrtQuantizedImplementation
from normcheck.frameworks.onnxruntime.runtime import (
    ELEMENT_TYPES,
    NOT_IMPLEMENTED,
    STORAGE,
    affine_inputs,
    from_storage,
    ort_value,
    providers,
    session_options,
    to_storage,
)
from normcheck.names import CONTIGUOUS
from normcheck.ops._op import required
from normcheck.ops.fused_add import FUSED_ADD
from normcheck.ops.layer_norm import NOBIAS
from normcheck.problem import Problem

Attributes = tuple[tuple[str, float | int], ...]
ATTRIBUTE_NAMES = {TensorProto.DOUBLE: "DOUBLE"}
# GroupNormalization's safe setting: statistics in double (see KNOWN_ISSUES)
STASH_DOUBLE: Attributes = (("stash_type", TensorProto.DOUBLE),)
GRAD_REASON = "onnxruntime runs inference only: ONNX models have no gradients"


@dataclass(frozen=True)
class ModelSpec:
    """Everything a session depends on: sessions are cached per spec (creating one is slow)."""

    op: str
    attributes: Attributes
    dtype: str
    rank: int
    param_rank: int
    outputs: tuple[str, ...]
    device: str


def build_model(spec: ModelSpec) -> onnx.ModelProto:
    """One node of the op; every dim symbolic, so one model serves every shape of its rank."""
    op_type, opset = OPSETS[spec.op]
    elem = ELEMENT_TYPES[spec.dtype]
    names = ("X", *PARAM_INPUTS[spec.op])
    inputs = [helper.make_tensor_value_info("X", elem, [None] * spec.rank)]
    inputs += [helper.make_tensor_value_info(n, elem, [None] * spec.param_rank) for n in names[1:]]
    outputs = [helper.make_tensor_value_info(n, elem, [None] * (spec.rank if n == "Y" else 1)) for n in spec.outputs]
    node = helper.make_node(op_type, list(names), list(spec.outputs), **dict(spec.attributes))
    graph = helper.make_graph([node], f"normcheck_{spec.op}", inputs, outputs)
    opsets = [helper.make_opsetid("", opset)]
    # onnx 1.23 writes IR version 14 by default, newer than ORT 1.31 loads. The IR version
    # that introduced the opset (onnx.helper.VERSION_TABLE) is what an exporter targeting that
    # opset writes, and any runtime implementing the opset reads it: 8 for opsets 15/17,
    # 10 for 21/22, 11 for 23.
    model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model)
    return model


_SESSIONS: dict[tuple[ModelSpec, int], ort.InferenceSession | str] = {}


def session(spec: ModelSpec, threads: int = 1) -> ort.InferenceSession:
    """The cached session for ``spec`` with ``threads`` intra-op threads; raises Unsupported (also
    cached) where ORT has no kernel."""
    key = (spec, threads)
    if key not in _SESSIONS:
        try:
            model = build_model(spec).SerializeToString()
            options = session_options(threads)
            _SESSIONS[key] = ort.InferenceSession(model, options, providers=providers(spec.device))
        except Exception as e:
            reason = unsupported_reason(e, spec)
            if reason is None:
                raise
            _SESSIONS[key] = reason
    found = _SESSIONS[key]
    if isinstance(found, str):
        raise Unsupported(found)
    return found


def unsupported_reason(e: Exception, spec: ModelSpec) -> str | None:
    """A one-line reason for ORT's NOT_IMPLEMENTED, or None for any other error."""
    m = NOT_IMPLEMENTED.search(str(e))
    if m is None:
        return None
    op_type = OPSETS[spec.op][0]
    where = "CPU" if spec.device == "cpu" else "CUDA or CPU"  # CUDA sessions fall back to the CPU
    reason = f"onnxruntime has no {where} kernel for {op_type} in {spec.dtype}"
    if m.group(1) != op_type:  # no kernel of its own: ORT expanded the op's ONNX function body
        reason += f" (its function body needs {m.group(1)}({m.group(2)}))"
    return reason


def run_model(spec: ModelSpec, feeds: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]]) -> dict:
    """Run ``spec`` on float64 ``feeds``; outputs (float64) are written into buffers of ``shapes``,
    since ORT cannot hand a bfloat16 output to NumPy itself."""
    sess = session(spec)
    binding = sess.io_binding()
    # OrtValues borrow their arrays' memory: keep every array alive until the run is over
    arrays = {name: to_storage(a, spec.dtype) for name, a in feeds.items()}
    buffers = {name: np.zeros(shapes[name], dtype=STORAGE[spec.dtype]) for name in spec.outputs}
    for name, a in arrays.items():
        binding.bind_ortvalue_input(name, ort_value(a, spec.dtype))
    for name, buf in buffers.items():
        binding.bind_ortvalue_output(name, ort_value(buf, spec.dtype))
    sess.run_with_iobinding(binding)
    return {name: from_storage(buf, spec.dtype) for name, buf in buffers.items()}


# -- the ops ------------------------------------------------------------------------


def attributes(p: Problem, momentum: float | None, training: bool, extra: Attributes = ()) -> Attributes:
    """The node's attributes; epsilon and momentum are ONNX FLOAT (32-bit) attributes.
    stash_type is left at its default (statistics in float32) unless ``extra`` sets it."""
    attrs: dict[str, float | int] = {"epsilon": p.eps}
    if p.op == "bn":
        if momentum is None:
            raise ValueError("batch norm's node needs a momentum")
        attrs.update(momentum=momentum, training_mode=int(training))
    elif p.op in ("ln", "rms"):
        attrs["axis"] = -required(p.params.normalized_ndim, "normalized_ndim")
    elif p.op == "gn":
        attrs["num_groups"] = required(p.params.groups, "groups")
    attrs.update(extra)
    return tuple(sorted(attrs.items()))


class OrtImplementation(Implementation):
    framework = "onnxruntime"

    def __init__(self, op: str, convention: Convention, extra: Attributes = ()) -> None:
        self.op = op
        self.name = f"onnx.{OPSETS[op][0]}" + "".join(f"({k}={ATTRIBUTE_NAMES.get(v, v)})" for k, v in extra)
        self._convention = convention
        self._extra = extra

    def unsupported(self, problem: Problem, layout: str) -> str | None:
        if problem.op == "in" and problem.params.running_stats:
            return "ONNX InstanceNormalization has no running statistics"
        return None

    def missing_checks(self, problem: Problem) -> dict[str, str]:
        return dict.fromkeys(("grad_input", "grad_weight", "grad_bias"), GRAD_REASON)

    def run(self, problem: Problem, layout: str, device: str) -> RunOutput:
        if layout != CONTIGUOUS:
            raise ValueError(f"ONNX takes channels first only, not {layout}")
        if problem.op == "bn":
            return self._run_batch_norm(problem, device)
        return self._run_one(problem, device)

    def model_spec(
        self, p: Problem, device: str, training: bool = False, outputs: tuple[str, ...] = ("Y",)
    ) -> ModelSpec:
        """The one-node model of case ``p`` on ``device``: its attributes (batch norm with
        ``training_mode=training``) and the ``outputs`` it returns (batch norm in training may also
        return "running_mean" and "running_var")."""
        momentum = self._convention.to_framework_momentum(p.momentum) if p.op == "bn" else None
        prank = required(p.params.normalized_ndim, "normalized_ndim") if p.op in ("ln", "rms") else 1
        attrs = attributes(p, momentum, training, self._extra)
        return ModelSpec(p.op, attrs, p.dtype, len(p.shape), prank, outputs, device)

    def _run_one(self, p: Problem, device: str) -> RunOutput:
        y = run_model(self.model_spec(p, device), {"X": p.x, **affine_inputs(p)}, {"Y": p.shape})["Y"]
        out = RunOutput()
        out.add("forward", y, p.dtype)
        return out

    def _run_batch_norm(self, p: Problem, device: str) -> RunOutput:
        """training_mode=1 for each training batch, chaining the updated running statistics
        (outputs) into the next step's inputs; then x in training or inference mode."""
        train = self.model_spec(p, device, True, ("Y", "running_mean", "running_var"))
        channels = (p.shape[1],)
        shapes = {"Y": p.shape, "running_mean": channels, "running_var": channels}
        rm, rv = p.initial_running()  # batch norm cases always track them
        affine = affine_inputs(p)
        for batch in p.steps:
            got = run_model(train, {"X": batch, **affine, "input_mean": rm, "input_var": rv}, shapes)
            rm, rv = got["running_mean"], got["running_var"]
        feeds = {"X": p.x, **affine, "input_mean": rm, "input_var": rv}
        if p.params.mode == "train":
            got = run_model(train, feeds, shapes)
            y, rm, rv = got["Y"], got["running_mean"], got["running_var"]
        else:
            y = run_model(self.model_spec(p, device), feeds, shapes)["Y"]
        out = RunOutput()
        out.add("forward", y, p.dtype)
        out.add("running_mean", rm, p.dtype)
        out.add("running_var", rv, p.dtype)
        return out


# -- fused add + norm: the com.microsoft contrib ops ---------------------------------------

# op -> the contrib op; its outputs are (output, mean, inv_std_var, input_skip_bias_sum)
SKIP_OPS = {"add_rms": "SkipSimplifiedLayerNormalization", "add_ln": "SkipLayerNormalization"}
SKIP_DTYPES = ("float32", "float16")  # the CPU kernels' type constraint (no double, no bfloat16)
_SKIP_SESSIONS: dict[tuple, ort.InferenceSession] = {}


def skip_model(op: str, dtype: str, rank: int, beta: bool, eps: float) -> onnx.ModelProto:
    """One com.microsoft Skip*LayerNormalization node: inputs (X, skip, gamma[, beta]), outputs
    the normalized h and h = X + skip (the fourth output)."""
    elem = ELEMENT_TYPES[dtype]
    names = ["X", "skip", "gamma"] + (["beta"] if beta else [])
    inputs = [helper.make_tensor_value_info(n, elem, [None] * rank) for n in names[:2]]
    inputs += [helper.make_tensor_value_info(n, elem, [None]) for n in names[2:]]
    outputs = [helper.make_tensor_value_info(n, elem, [None] * rank) for n in ("Y", "H")]
    node = helper.make_node(SKIP_OPS[op], names, ["Y", "", "", "H"], domain="com.microsoft", epsilon=eps)
    graph = helper.make_graph([node], f"normcheck_{op}", inputs, outputs)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


class OrtSkipNormImplementation(Implementation):
    """com.microsoft SkipSimplifiedLayerNormalization (add_rms) and SkipLayerNormalization
    (add_ln): h = X + skip and its norm over the last axis, for 2-D and 3-D input, float32 and
    float16, forward only. The node's epsilon is a float32 attribute."""

    framework = "onnxruntime"

    def __init__(self, op: str) -> None:
        self.op = op
        self.name = f"com.microsoft.{SKIP_OPS[op]}"
        self.extensions = frozenset({FUSED_ADD, NOBIAS} if op == "add_ln" else {FUSED_ADD})

    def unsupported(self, problem: Problem, layout: str) -> str | None:
        if len(problem.shape) not in (2, 3):
            return f"{SKIP_OPS[self.op]} takes 2-D or 3-D input, not {len(problem.shape)}-D"
        if problem.params.normalized_ndim != 1:
            return f"{SKIP_OPS[self.op]} normalizes the last axis only"
        return None

    def missing_checks(self, problem: Problem) -> dict[str, str]:
        return dict.fromkeys(("grad_input", "grad_residual", "grad_weight", "grad_bias"), GRAD_REASON)

    def session(self, p: Problem, device: str, threads: int = 1) -> ort.InferenceSession:
        """The session of the case's node (cached per op, dtype, rank, beta, eps, device, threads)."""
        if p.dtype not in SKIP_DTYPES:
            kernels = ", ".join(SKIP_DTYPES)
            raise Unsupported(f"onnxruntime's {SKIP_OPS[self.op]} has no kernel for {p.dtype} (only {kernels})")
        beta = "beta" in self.feeds(p)
        key = (self.op, p.dtype, len(p.shape), beta, p.eps, device, threads)
        if key not in _SKIP_SESSIONS:
            model = skip_model(self.op, p.dtype, len(p.shape), beta, p.eps).SerializeToString()
            _SKIP_SESSIONS[key] = ort.InferenceSession(model, session_options(threads), providers=providers(device))
        return _SKIP_SESSIONS[key]

    def feeds(self, p: Problem) -> dict[str, np.ndarray]:
        """The node's float64 inputs: X, skip (the residual), gamma (ones where the case has no
        weight: it is required) and, for add_ln with a bias, beta."""
        gamma = p.weight if p.weight is not None else np.ones(p.shape[-1:])
        feeds = {"X": p.x, "skip": p.fused_inputs()[0], "gamma": gamma}
        if self.op == "add_ln" and p.bias is not None:
            feeds["beta"] = p.bias
        return feeds

    def run(self, problem: Problem, layout: str, device: str) -> RunOutput:
        p = problem
        sess = self.session(p, device)
        binding = sess.io_binding()
        arrays = {name: to_storage(a, p.dtype) for name, a in self.feeds(p).items()}
        buffers = {name: np.zeros(p.shape, dtype=STORAGE[p.dtype]) for name in ("Y", "H")}
        for name, a in arrays.items():
            binding.bind_ortvalue_input(name, ort_value(a, p.dtype))
        for name, buf in buffers.items():
            binding.bind_ortvalue_output(name, ort_value(buf, p.dtype))
        sess.run_with_iobinding(binding)
        out = RunOutput()
        out.add("forward", from_storage(buffers["Y"], p.dtype), p.dtype)
        out.add("residual_out", from_storage(buffers["H"], p.dtype), p.dtype)
        return out


class OrtFramework(Framework):
    name = "onnxruntime"
    conventions = ONNXRUNTIME
    known_issues = KNOWN_ISSUES

    def implementations(self, op: str) -> list[Implementation]:
        if op in SKIP_OPS:
            return [OrtSkipNormImplementation(op)]
        if op not in self.conventions:  # no adaLN built in
            return []
        # LayerNormalization's axis means [axis, rank): trailing axes only (axis = -normalized_ndim)
        impls: list[Implementation] = [OrtImplementation(op, self.convention(op))]
        if op == "ln":  # B is optional: without it (fed as zeros) it is LayerNorm without bias
            impls[0].extensions = frozenset({NOBIAS})
        if op == "gn":
            impls.append(OrtImplementation(op, self.convention(op), STASH_DOUBLE))
        if op in ("ln", "rms"):  # with FP8 output: the norm, then QuantizeLinear (planned for --quantize only)
            impls.append(OrtQuantizedImplementation(op))
        return impls

    def device_problem(self, device: str) -> str | None:
        if device == "cpu":
            return None
        if device == "cuda" or device.startswith("cuda:"):
            if "CUDAExecutionProvider" in ort.get_available_providers():
                return None
            return "onnxruntime has no CUDAExecutionProvider here"
        return f"unknown device {device!r}"


def framework() -> Framework:
    return OrtFramework()
