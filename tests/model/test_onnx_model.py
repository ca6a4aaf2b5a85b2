"""An ONNX model's graphs: the main graph, control-flow bodies and local functions; constants
from initializers, Constant nodes and small constant expressions."""

from __future__ import annotations

import numpy as np
from _require import require

onnx = require("onnxruntime", "onnx")

from _models import inventory
from onnx import TensorProto, helper

from fixtures.models import onnx_graphs as graphs
from normcheck.model.onnx_graph import GraphView
from normcheck.model.onnx_model import inspect_onnx


def test_a_layer_norm_inside_an_if_branch_and_a_local_function_is_found():
    body = graphs.fused_layer_norm().graph
    branch = helper.make_graph(
        list(body.node), "then", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    )
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    node = helper.make_node("If", ["cond"], ["out"], name="maybe", then_branch=branch, else_branch=branch)
    function = helper.make_function(
        "local",
        "Norm",
        ["x"],
        ["y"],
        [helper.make_node("LayerNormalization", ["x", "s"], ["y"], name="fn_ln", epsilon=1e-3)],
        [helper.make_opsetid("", 17)],
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8, 4, 6]), cond],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        list(body.initializer),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    model.functions.append(function)
    paths = [(layer.path, layer.eps) for layer in inspect_onnx(model).layers]
    assert paths == [  # in the order of the node's attributes (make_node sorts them by name)
        ("maybe/else_branch/ln/LayerNormalization", 1e-6),
        ("maybe/then_branch/ln/LayerNormalization", 1e-6),
        ("local.Norm/fn_ln", 1e-3),
    ]


def test_constants_fold_through_casts_unsqueezes_and_arithmetic():
    b = graphs.Builder(13)
    w = b.init("w", [1.0, 2.0, 3.0])
    cast = b.node("Cast", [w], "cast", to=TensorProto.FLOAT16)
    axes = b.init("axes", [1, 2], np.int64)
    unsq = b.node("Unsqueeze", [cast, axes], "unsqueeze")
    plus = b.node("Add", [unsq, b.constant("one", 1.0, np.float16)], "plus_one")
    eps = b.constant("eps", 1e-5)
    view = GraphView(b.nodes, {t.name: t for t in b.inits}, {"": 13})
    got = view.const(plus)
    assert got is not None and got.source == "w"
    assert got.value.shape == (3, 1, 1) and got.value.dtype == np.float16
    assert got.value.reshape(-1).tolist() == [2.0, 3.0, 4.0]
    assert view.scalar(eps) == 1e-5  # the float32 1e-5 reads as written
    assert view.const("nowhere") is None


def test_weights_in_an_external_file_that_is_missing_are_listed_without_values(tmp_path):
    model = graphs.fused_layer_norm()
    path = tmp_path / "ln.onnx"
    onnx.save(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="ln.data", size_threshold=0
    )
    (tmp_path / "ln.data").unlink()
    inv = inventory(str(path))
    (layer,) = inv.layers
    assert layer.eps == 1e-6 and layer.param("weight") is not None and layer.param("weight").min is None
    assert any("external weights not read" in note for note in inv.notes)
