"""Decomposed normalization subgraphs in ONNX: layer norm (two-pass and one-pass), RMS norm,
group norm, with Cast nodes, axes as attribute (opset < 18) or input (opset ≥ 18)."""

from __future__ import annotations

import pytest
from _require import require

onnx = require("onnxruntime", "onnx")

from _models import inventory

from fixtures.models import onnx_graphs as graphs
from normcheck.model.records import MATCHED, ONE_PASS, TWO_PASS

LN_NODES = (
    "ln/cast_in",
    "ln/mean",
    "ln/sub",
    "ln/pow",
    "ln/var",
    "ln/add_eps",
    "ln/sqrt",
    "ln/div",
    "ln/cast_out",
    "ln/mul_weight",
    "ln/add_bias",
)


def _only(path: str):
    inv = inventory(path)
    assert len(inv.layers) == 1, [layer.path for layer in inv.layers]
    return inv.layers[0]


@pytest.mark.parametrize("opset", [17, 18])
def test_a_float16_layer_norm_computed_in_float32_between_casts(onnx_file, opset):
    layer = _only(onnx_file(graphs.decomposed_layer_norm_fp16(opset=opset)))
    assert (layer.path, layer.op, layer.kind, layer.basis) == (
        "ln/cast_in..ln/add_bias",
        "ln",
        "decomposed layer norm",
        MATCHED,
    )
    assert layer.nodes == LN_NODES  # the Constant nodes feeding 2 and eps are data, not part of it
    assert (layer.eps, layer.axes, layer.variance, layer.opset) == (1e-5, (-1,), TWO_PASS, opset)
    assert (layer.dtype, layer.compute_dtype) == ("float16", "float32")
    assert (layer.input, layer.output) == ("pre/relu", "y")
    assert (layer.weight, layer.bias, layer.feature_shape) == (True, True, (32,))
    assert (layer.param("weight").name, layer.param("weight").dtype, layer.param("bias").name) == (
        "ln.weight",
        "float16",
        "ln.bias",
    )


@pytest.mark.parametrize("opset", [17, 18])
def test_the_one_pass_form(onnx_file, opset):
    layer = _only(onnx_file(graphs.one_pass_layer_norm(opset=opset)))
    assert (layer.op, layer.variance, layer.eps, layer.axes) == ("ln", ONE_PASS, 1e-6, (1,))
    assert layer.path == "ln1p/mean..ln1p/add_bias"
    assert {"ln1p/square", "ln1p/mean_squared", "ln1p/var", "ln1p/reciprocal", "ln1p/normalize"} <= set(layer.nodes)
    assert (layer.dtype, layer.compute_dtype, layer.feature_shape) == ("float32", None, (16,))


@pytest.mark.parametrize("inverse", ["reciprocal", "pow", "div"])
@pytest.mark.parametrize("opset", [17, 18])
def test_llama_rms_norm_with_each_spelling_of_one_over_sqrt(onnx_file, inverse, opset):
    layer = _only(onnx_file(graphs.decomposed_rms_norm(opset=opset, inverse=inverse)))
    assert (layer.path, layer.op, layer.kind) == ("rms/cast_in..rms/mul_weight", "rms", "decomposed RMS norm")
    assert (layer.eps, layer.axes, layer.variance, layer.dtype, layer.compute_dtype) == (
        1e-6,
        (-1,),
        None,
        "float16",
        "float32",
    )
    assert (layer.weight, layer.bias, layer.output) == (True, False, "y")


def test_a_gemma_weight_applied_as_one_plus_w(onnx_file):
    layer = _only(onnx_file(graphs.decomposed_rms_norm(gemma=True)))
    weight = layer.param("weight")
    assert weight is not None and weight.name == "rms.weight" and abs(weight.mean) < 0.01  # the stored w, not 1 + w
    assert any("1 + weight" in note for note in layer.notes)


@pytest.mark.parametrize("opset", [17, 18])
def test_group_norm_between_reshapes(onnx_file, opset):
    layer = _only(onnx_file(graphs.decomposed_group_norm(opset=opset)))
    assert (layer.path, layer.op, layer.kind) == ("gn/reshape..gn/add_bias", "gn", "decomposed group norm")
    assert (layer.groups, layer.eps, layer.channel_axis, layer.feature_shape) == (graphs.GN_GROUPS, 1e-5, 1, (8,))
    assert "gn/reshape_back" in layer.nodes and "gn/shape" not in layer.nodes
    assert (layer.input, layer.output, layer.param("weight").shape) == ("pre/relu", "y", (8, 1, 1))


def test_eps_outside_the_root_is_matched_and_said(onnx_file):
    layer = _only(onnx_file(graphs.eps_outside_sqrt()))
    assert (layer.op, layer.eps, layer.weight, layer.bias) == ("ln", 1e-5, False, False)
    assert any("outside the square root" in note for note in layer.notes)


def test_divisions_by_roots_that_are_not_norms_are_not_listed(onnx_file):
    assert inventory(onnx_file(graphs.not_norms())).layers == ()


def test_instance_norm_and_batch_norm_statistics_are_told_apart_by_their_axes(onnx_file):
    from onnx import TensorProto

    for axes, weight_shape, op in (([2, 3], (4, 1, 1), "in"), ([0, 2, 3], (4, 1, 1), "bn"), ([1], (4, 1, 1), "ln")):
        b = graphs.Builder(17)
        mean = b.reduce_mean("x", axes, "n/mean")
        d = b.node("Sub", ["x", mean], "n/sub")
        var = b.reduce_mean(b.node("Mul", [d, d], "n/square"), axes, "n/var")
        std = b.node("Sqrt", [b.node("Add", [var, b.init("n.eps", 1e-5)], "n/add_eps")], "n/sqrt")
        normed = b.node("Div", [d, std], "n/div")
        b.node("Mul", [normed, b.init("n.weight", [[[1.0]]] * 4)], "n/mul_weight")
        b.nodes[-1].output[0] = "y"
        model = b.model("x", TensorProto.FLOAT, (2, 4, 3, 3), "y", TensorProto.FLOAT, (2, 4, 3, 3))
        layer = _only(onnx_file(model, f"{op}.onnx"))
        assert (layer.op, layer.axes, layer.param("weight").shape) == (op, tuple(axes), weight_shape), op
