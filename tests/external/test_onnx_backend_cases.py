"""ONNX's backend node cases for the normalization ops, run through normcheck's reference.

The cases come from the installed onnx's own generators (``onnx.backend.test.case.node``), made
in this process: each generator's export methods are called with ``expect`` recording what it
is given (the node, its inputs, the expected outputs). The reference must reproduce every
expected output at the tolerance onnx's backend runner checks node cases with. Opset-18 group
normalization (per-group scale and bias) is no longer among the generators, so it is checked
against ONNX's reference evaluator, which runs the opset-18 function body.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from _require import require

from normcheck.ops import OPS, OpParams
from normcheck.ops.batch_norm import batch_norm
from normcheck.ops.group_norm import group_norm
from normcheck.ops.instance_norm import instance_norm
from normcheck.ops.layer_norm import layer_norm
from normcheck.ops.rms_norm import rms_norm

onnx = require("onnxruntime", "onnx")
from onnx import helper
from onnx.backend.test.case.base import Base

# onnx/backend/test/case/node/__init__.py: expect() records every node case as a TestCase with
# rtol=1e-3, atol=1e-7, and onnx/backend/test/runner compares a backend's outputs with the
# expected ones by np.testing.assert_allclose(out, ref, rtol=rtol, atol=atol).
RTOL, ATOL = 1e-3, 1e-7

# generator module -> the op its cases exercise
GENERATORS = {
    "batch_normalization": "BatchNormalization",
    "layernormalization": "LayerNormalization",
    "instance_normalization": "InstanceNormalization",
    "groupnormalization": "GroupNormalization",
    "rmsnormalization": "RMSNormalization",
}
PACKAGE = "onnx.backend.test.case.node"


@dataclass
class NodeCase:
    """One case as a generator gives it to ``expect``."""

    name: str
    node: Any  # onnx.NodeProto
    inputs: list[np.ndarray]
    outputs: list[np.ndarray]
    opset: int
    attrs: dict[str, Any] = field(default_factory=dict)


def _recorder(cases: list[NodeCase]) -> Callable[..., None]:
    def expect(node: Any, inputs: Any, outputs: Any, name: str, **kwargs: Any) -> None:
        imports = kwargs.get("opset_imports") or []
        versions = [i.version for i in imports if i.domain in ("", "ai.onnx")]
        opset = versions[0] if versions else onnx.defs.get_schema(node.op_type, domain=node.domain).since_version
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        cases.append(
            NodeCase(name, node, [np.asarray(a) for a in inputs], [np.asarray(a) for a in outputs], opset, attrs)
        )

    return expect


def generated_cases() -> list[NodeCase]:
    """Every case of the normalization generators, made by calling their export methods as
    onnx's exporter does (numpy seeded with 0 before each), with ``expect`` recording."""
    cases: list[NodeCase] = []
    for name in GENERATORS:
        if importlib.util.find_spec(f"{PACKAGE}.{name}") is None:
            continue  # an onnx without this op's generator (RMSNormalization came in opset 23)
        module = importlib.import_module(f"{PACKAGE}.{name}")
        generators = [
            c for _, c in inspect.getmembers(module, inspect.isclass) if issubclass(c, Base) and c is not Base
        ]
        real_expect = module.expect
        module.expect = _recorder(cases)
        try:
            for generator in generators:
                for export in sorted(n for n in vars(generator) if n.startswith("export")):
                    np.random.seed(0)
                    getattr(generator, export)()
        finally:
            module.expect = real_expect
    return cases


CASES = generated_cases()


def attribute(case: NodeCase, name: str) -> Any:
    """The node's attribute, or its default in the schema of the case's opset."""
    if name in case.attrs:
        return case.attrs[name]
    schema = onnx.defs.get_schema(case.node.op_type, case.opset, case.node.domain)
    return helper.get_attribute_value(schema.attributes[name].default_value)


def run_batch_norm(case: NodeCase) -> list[np.ndarray]:
    x, scale, bias, mean, var = case.inputs
    training = bool(attribute(case, "training_mode"))
    y, running_mean, running_var = batch_norm(
        x,
        mean,
        var,
        scale,
        bias,
        training=training,
        momentum=1 - attribute(case, "momentum"),  # ONNX's momentum weighs the old value
        eps=attribute(case, "epsilon"),
        unbiased_running_var=False,  # ONNX keeps the population variance
    )
    assert running_mean is not None and running_var is not None
    return [y, running_mean, running_var] if training else [y]


def _axis(case: NodeCase, x: np.ndarray) -> int:
    axis = int(attribute(case, "axis"))
    return axis + x.ndim if axis < 0 else axis


def run_layer_norm(case: NodeCase) -> list[np.ndarray]:
    x, scale, *bias = case.inputs
    axis, eps = _axis(case, x), attribute(case, "epsilon")
    y = layer_norm(x, x.shape[axis:], scale, bias[0] if bias else None, eps=eps)
    norm = OPS["ln"].normalization(x.shape, OpParams(normalized_ndim=x.ndim - axis))
    mean, variance = norm.moments(x)
    return [y, mean, 1 / np.sqrt(variance + eps)]


def run_instance_norm(case: NodeCase) -> list[np.ndarray]:
    x, scale, bias = case.inputs
    return [instance_norm(x, weight=scale, bias=bias, eps=attribute(case, "epsilon"))[0]]


def run_group_norm(case: NodeCase) -> list[np.ndarray]:
    x, scale, bias = case.inputs
    groups, eps = int(attribute(case, "num_groups")), attribute(case, "epsilon")
    return [group_norm(x, groups, scale, bias, eps=eps, per_group_affine=case.opset < 21)]


def run_rms_norm(case: NodeCase) -> list[np.ndarray]:
    x, scale = case.inputs
    axis = _axis(case, x)
    return [rms_norm(x, x.shape[axis:], scale, eps=attribute(case, "epsilon"))]


RUNNERS: dict[str, Callable[[NodeCase], list[np.ndarray]]] = {
    "BatchNormalization": run_batch_norm,
    "LayerNormalization": run_layer_norm,
    "InstanceNormalization": run_instance_norm,
    "GroupNormalization": run_group_norm,
    "RMSNormalization": run_rms_norm,
}


def test_every_normalization_op_has_cases():
    """The generators ran: each op of the installed onnx's generators gave cases."""
    present = {op for name, op in GENERATORS.items() if importlib.util.find_spec(f"{PACKAGE}.{name}") is not None}
    assert {"BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization"} <= present
    assert {c.node.op_type for c in CASES} == present
    assert len(CASES) >= 20


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_reference_reproduces_the_onnx_node_case(case):
    got = RUNNERS[case.node.op_type](case)
    assert len(got) == len(case.outputs)
    for name, actual, expected in zip(case.node.output, got, case.outputs, strict=True):
        assert np.shape(actual) == expected.shape, name
        np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL, err_msg=f"{case.name}: {name}")


def test_onnx_training_mode_keeps_the_population_running_variance():
    """The running-variance convention is what makes ONNX's training cases pass: PyTorch's
    Bessel-corrected variance does not reproduce them."""
    training = [c for c in CASES if c.node.op_type == "BatchNormalization" and attribute(c, "training_mode")]
    assert training
    for case in training:
        x, scale, bias, mean, var = case.inputs
        momentum, eps = 1 - attribute(case, "momentum"), attribute(case, "epsilon")
        _, _, unbiased = batch_norm(x, mean, var, scale, bias, training=True, momentum=momentum, eps=eps)
        assert not np.allclose(unbiased, case.outputs[2], rtol=RTOL, atol=ATOL)


# -- opset 18: per-group scale and bias ------------------------------------------------------


def _opset18_group_norm(shape: tuple[int, ...], groups: int, eps: float) -> Any:
    from onnx import TensorProto

    node = helper.make_node("GroupNormalization", ["x", "scale", "bias"], ["y"], num_groups=groups, epsilon=eps)
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape)),
        helper.make_tensor_value_info("scale", TensorProto.FLOAT, [groups]),
        helper.make_tensor_value_info("bias", TensorProto.FLOAT, [groups]),
    ]
    graph = helper.make_graph(
        [node], "group_norm_18", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize(
    ("shape", "groups", "eps"),
    [((3, 4, 2, 2), 2, 1e-5), ((2, 6, 5), 3, 1e-2), ((2, 6, 3), 1, 1e-5), ((2, 6, 3), 6, 1e-5), ((4, 8), 4, 1e-5)],
)
def test_per_group_affine_matches_onnx_group_normalization_18(shape, groups, eps):
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(18)
    x = rng.standard_normal(shape).astype(np.float32)
    scale, bias = rng.standard_normal(groups).astype(np.float32), rng.standard_normal(groups).astype(np.float32)
    (want,) = ReferenceEvaluator(_opset18_group_norm(shape, groups, eps)).run(
        None, {"x": x, "scale": scale, "bias": bias}
    )
    got = group_norm(x, groups, scale, bias, eps=eps, per_group_affine=True)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    if 1 < groups < shape[1]:  # where the readings differ, channels taking the groups' values in turn do not match
        per_channel = group_norm(x, groups, np.resize(scale, shape[1]), np.resize(bias, shape[1]), eps=eps)
        assert not np.allclose(per_channel, want, rtol=RTOL, atol=ATOL)
