"""Fused normalization ops in ONNX (the default domain and com.microsoft), and PyTorch's export of
the CNN, whose group norm is a Reshape around an InstanceNormalization."""

from __future__ import annotations

import pytest
from _require import require

onnx = require("onnxruntime", "onnx")

from _models import by_path, inventory

from fixtures.models import onnx_graphs as graphs
from normcheck.model.records import EVAL, FUSED, OLD, ONE_PASS


def test_layer_normalization_over_two_axes(onnx_file):
    (layer,) = inventory(onnx_file(graphs.fused_layer_norm())).layers
    assert (layer.path, layer.kind, layer.basis, layer.op) == (
        "ln/LayerNormalization",
        "onnx LayerNormalization",
        FUSED,
        "ln",
    )
    assert (layer.eps, layer.axes, layer.feature_shape, layer.opset, layer.dtype) == (
        1e-6,
        (-2, -1),
        (4, 6),
        17,
        "float32",
    )
    assert (layer.nodes, layer.input, layer.output) == (("ln/LayerNormalization",), "pre/relu", "y")


@pytest.mark.parametrize("opset, scale", [(18, "per group"), (21, "per channel")])
def test_group_normalization_at_opset_18_and_21(onnx_file, opset, scale):
    (layer,) = inventory(onnx_file(graphs.fused_group_norm(opset=opset))).layers
    assert (layer.kind, layer.op, layer.groups, layer.eps, layer.opset, layer.channel_axis) == (
        "onnx GroupNormalization",
        "gn",
        2,
        1e-5,
        opset,
        1,
    )
    assert layer.param("weight").shape == ((2,) if opset == 18 else (8,))
    assert any(scale in note for note in layer.notes)
    assert layer.variance == (ONE_PASS if opset == 21 else None)


def test_rms_normalization_at_opset_23(onnx_file):
    (layer,) = inventory(onnx_file(graphs.fused_rms_norm())).layers
    assert (layer.kind, layer.op, layer.eps, layer.axes, layer.weight, layer.bias, layer.opset) == (
        "onnx RMSNormalization",
        "rms",
        1e-6,
        (-1,),
        True,
        False,
        23,
    )


def test_batch_and_instance_normalization(onnx_file):
    bn, inorm = inventory(onnx_file(graphs.fused_norms())).layers
    assert (bn.kind, bn.eps, bn.momentum, bn.momentum_weights, bn.new_batch_weight) == (
        "onnx BatchNormalization",
        1e-3,
        0.99,
        OLD,
        pytest.approx(0.01),
    )
    assert (bn.mode, bn.running_stats, bn.axes, bn.channel_axis) == (EVAL, True, (0, 2, 3), 1)
    assert [p.role for p in bn.params] == ["weight", "bias", "running_mean", "running_var"]
    assert (inorm.kind, inorm.op, inorm.axes, inorm.eps) == ("onnx InstanceNormalization", "in", (2, 3), 1e-5)


def test_onnx_runtime_contrib_ops(onnx_file):
    inv = inventory(onnx_file(graphs.skip_layer_norm()))
    assert dict(inv.opsets) == {"": 17, "com.microsoft": 1}
    layers = by_path(inv)
    assert [(path, layer.kind, layer.op) for path, layer in layers.items()] == [
        ("encoder/SkipLayerNorm", "com.microsoft.SkipLayerNormalization", "ln"),
        ("decoder/SkipSimplifiedLayerNorm", "com.microsoft.SkipSimplifiedLayerNormalization", "rms"),
        ("final/SimplifiedLayerNorm", "onnx SimplifiedLayerNormalization", "rms"),
        ("unet/GroupNorm", "com.microsoft.GroupNorm", "gn"),
    ]
    skip = layers["encoder/SkipLayerNorm"]
    assert (skip.eps, skip.axes, skip.weight, skip.bias, skip.opset) == (1e-12, (-1,), True, True, 1)
    assert [p.name for p in skip.params] == ["sln.gamma", "sln.beta"]  # the skip input is not a parameter
    gn = layers["unet/GroupNorm"]
    assert (gn.groups, gn.channel_axis, gn.dtype) == (4, -1, "float32")
    assert any("SiLU" in note for note in gn.notes)


@pytest.mark.filterwarnings("ignore")  # the TorchScript exporter is deprecated
@pytest.mark.parametrize("opset", [17, 18])
def test_the_torch_cnn_exported_to_onnx(tmp_path, opset):
    require("torch")
    from fixtures.models.torch_cnn import export_onnx

    inv = inventory(export_onnx(str(tmp_path / "cnn.onnx"), opset=opset))
    assert inv.model.startswith("pytorch")
    bn, gn = inv.layers
    assert (bn.path, bn.kind, bn.eps, bn.momentum, bn.momentum_weights, bn.mode) == (
        "/bn1/BatchNormalization",
        "onnx BatchNormalization",
        1e-4,
        0.8,  # PyTorch's 0.2 (new batch) written in ONNX's meaning (old value)
        OLD,
        EVAL,
    )
    assert bn.new_batch_weight == pytest.approx(0.2)
    assert [p.name for p in bn.params] == ["bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"]
    assert (gn.path, gn.op, gn.kind, gn.groups, gn.eps) == (
        "/gn2/Reshape../gn2/Add",
        "gn",
        "group norm as InstanceNormalization + Reshape",
        4,
        1e-6,
    )
    assert "/gn2/InstanceNormalization" in gn.nodes and (gn.input, gn.output) == (
        "/conv2/Conv_output_0",
        "/gn2/Add_output_0",
    )
    assert gn.param("weight").name == "gn2.weight" and gn.feature_shape == (16,)
