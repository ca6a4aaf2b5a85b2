"""normcheck port --input-shape/--input (normcheck/model/port_activation.py, model/run.py's
capture_source and run_port_layers, cli/port.py): a layer and its port run on the same real
activation, judged against the float64 reference of the source's configuration; the values of
their weights compared exactly."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from _models import MODELS
from _require import require

import normcheck.cli as cli
from normcheck.model.checks import LayerSetup
from normcheck.model.port import ACTIVATION, ERROR, WARNING
from normcheck.model.port_activation import compare_weights, port_layout
from normcheck.model.records import NormLayer
from normcheck.ops import OpParams

TORCH_CNN = f"{MODELS}/torch_cnn.py:build"


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["normcheck", "port", *args])
    with pytest.raises(SystemExit) as info:
        cli.main()
    out, err = capsys.readouterr()
    return info.value.code, out, err


def activation_findings(pair: dict) -> list[dict]:
    return [f for f in pair["findings"] if f["check"] == ACTIVATION]


# ---- weights and layouts, on hand-made setups -----------------------------------------------


def bn_setup(weight, mode: str = "eval", dtype: str = "float32", **kw) -> LayerSetup:
    return LayerSetup(
        "bn", OpParams(mode=mode, running_stats=True), 1e-5, dtype, weight=np.asarray(weight, dtype=float), **kw
    )


def test_equal_weights_give_no_finding_and_rounding_to_the_coarser_dtype_is_equal():
    w = np.array([0.1, 0.2, 0.3])
    assert compare_weights(bn_setup(w), bn_setup(w)) == []
    half = np.asarray(w, dtype=np.float16).astype(float)
    assert compare_weights(bn_setup(w), bn_setup(half, dtype="float16")) == []


def test_permuted_and_other_weights_are_errors_naming_which():
    w = np.array([0.5, 1.0, 1.5, 2.0])
    (found,) = compare_weights(bn_setup(w), bn_setup(w[::-1]))
    assert found.severity == ERROR and "another order" in found.rule and found.property == "weight (γ)"
    other = w.copy()
    other[2] = 7.0
    (found,) = compare_weights(bn_setup(w), bn_setup(other))
    assert found.severity == ERROR and "index 2: 1.5 vs 7" in found.detail


def test_running_statistics_matter_in_evaluation_only():
    w = np.ones(3)
    rv = np.array([1.0, 2.0, 3.0])
    for mode, severity in (("eval", ERROR), ("train", WARNING)):
        src = bn_setup(w, mode, running_mean=np.zeros(3), running_var=rv)
        dst = bn_setup(w, mode, running_mean=np.zeros(3), running_var=rv + 1)
        (found,) = compare_weights(src, dst)
        assert found.property == "running variance" and found.severity == severity


def test_the_activation_goes_to_the_port_layers_own_layout():
    x = np.arange(2 * 3 * 4 * 5, dtype=float).reshape(2, 3, 4, 5)
    keras_bn = NormLayer(
        "bn", "bn", "keras.layers.BatchNormalization", "tensorflow", True, "built-in layer", channel_axis=-1
    )
    assert port_layout(keras_bn, x).shape == (2, 4, 5, 3)
    np.testing.assert_array_equal(port_layout(keras_bn, x)[1, 2, 3], x[1, :, 2, 3])
    torch_ln = NormLayer("ln", "ln", "torch.nn.LayerNorm", "torch", True, "built-in layer")
    assert port_layout(torch_ln, x) is x


# ---- the CNN against its ONNX export, correct and with seeded defects ------------------------


@pytest.fixture
def exports(tmp_path):
    require("torch")
    require("onnx", "onnxruntime")
    from fixtures.models.torch_cnn import export_onnx, export_onnx_with_defects

    return export_onnx(str(tmp_path / "cnn.onnx")), export_onnx_with_defects(str(tmp_path / "bad.onnx"))


def test_the_cnn_and_its_onnx_export_agree_on_the_real_activations(monkeypatch, capsys, exports):
    good, _ = exports
    code, out, err = run_main(monkeypatch, capsys, TORCH_CNN, good, "--input-shape", "2,3,16,16", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["summary"]["status"]["equivalent"] == 2
    for pair in doc["pairs"]:
        (found,) = activation_findings(pair)
        assert found["severity"] == "info" and "computes the source's configuration" in found["rule"]
        assert float(found["dst_value"]) < 1e-5  # max abs error of a float32 layer on N(0, 1)-ish data


def test_seeded_defects_are_found_at_their_layers_with_their_causes(monkeypatch, capsys, exports):
    _, bad = exports
    code, out, _ = run_main(monkeypatch, capsys, TORCH_CNN, bad, "--input-shape", "2,3,16,16", "--format", "json")
    assert code == 1
    bn, gn = json.loads(out)["pairs"]
    (bn_run,) = activation_findings(bn)
    assert bn_run["severity"] == "error" and "eps is 0.001" in bn_run["rule"] and "instead of 0.0001" in bn_run["rule"]
    weights, gn_run = activation_findings(gn)
    assert weights["property"] == "weight (γ)" and "another order" in weights["rule"]
    assert gn_run["severity"] == "error" and "weight (γ) values differ from the source's" in gn_run["rule"]
    # the configuration comparison cannot see the permuted weights: their summaries agree
    assert not [f for f in gn["findings"] if f["check"] == "config" and f["severity"] == "error"]


def test_an_input_file_and_input_usage_errors(monkeypatch, capsys, exports, tmp_path):
    good, _ = exports
    batch = tmp_path / "batch.npy"
    np.save(batch, np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32))
    code, out, err = run_main(monkeypatch, capsys, TORCH_CNN, good, "--input", str(batch), "--format", "json")
    assert code == 0, err
    code, out, err = run_main(monkeypatch, capsys, TORCH_CNN, good, "--input", str(batch), "--input-shape", "1,3,8,8")
    assert code == 2 and out == "" and err.strip() == "normcheck: error: give --input-shape or --input, not both"
    code, out, err = run_main(monkeypatch, capsys, TORCH_CNN, good, "--input-shape", "1,5,8,8")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "the model raised" in err


# ---- the CNN against its Keras ports (NCHW -> NHWC) ----------------------------------------

KERAS = f"{MODELS}/keras_cnn.py"


def test_the_faithful_keras_port_computes_the_source_on_every_layer(monkeypatch, capsys):
    require("torch")
    require("tensorflow", "keras")
    code, out, err = run_main(
        monkeypatch, capsys, TORCH_CNN, f"{KERAS}:build_port", "--input-shape", "2,3,16,16", "--format", "json"
    )
    assert code == 0, err
    for pair in json.loads(out)["pairs"]:
        (found,) = activation_findings(pair)
        assert found["severity"] == "info" and "forward" in found["detail"]
        assert float(found["src_value"]) < 1e-5 and float(found["dst_value"]) < 1e-5


def test_keras_default_eps_left_in_fails_on_the_activation_with_its_cause(monkeypatch, capsys):
    require("torch")
    require("tensorflow", "keras")
    code, out, _ = run_main(
        monkeypatch,
        capsys,
        TORCH_CNN,
        f"{KERAS}:build_port_with_defects",
        "--input-shape",
        "2,3,16,16",
        "--format",
        "json",
    )
    assert code == 1
    bn, gn = json.loads(out)["pairs"]
    assert [f["severity"] for f in activation_findings(bn)] == ["info"]  # momentum only matters in training
    failing = activation_findings(gn)
    assert {f["rule"].split(" of the port")[0] for f in failing} >= {"forward", "grad_input"}
    for f in failing:
        assert f["severity"] == "error" and "eps is 0.001" in f["rule"] and "instead of 1e-06" in f["rule"]
        assert float(f["src_value"]) < 1e-3  # the source's own layer is right on the same activation and dy


# ---- Flax, TorchScript and torch.export on either side ---------------------------------------

FLAX = f"{MODELS}/flax_models.py"


def test_a_flax_port_runs_on_the_source_activations_and_its_eps_is_named(monkeypatch, capsys):
    require("torch")
    require("jax", "flax")
    code, out, err = run_main(
        monkeypatch, capsys, TORCH_CNN, f"{FLAX}:build_torch_port", "--input-shape", "2,3,16,16", "--format", "json"
    )
    assert code == 0, err
    assert all(f["severity"] == "info" for p in json.loads(out)["pairs"] for f in activation_findings(p))
    code, out, _ = run_main(
        monkeypatch,
        capsys,
        TORCH_CNN,
        f"{FLAX}:build_torch_port_default_eps",
        "--input-shape",
        "2,3,16,16",
        "--format",
        "json",
    )
    assert code == 1
    _, gn = json.loads(out)["pairs"]
    failing = [f for f in activation_findings(gn) if f["severity"] == "error"]
    assert failing and all("eps is 1e-05" in f["rule"] and "instead of 1e-06" in f["rule"] for f in failing)


def test_torchscript_and_exported_programs_on_either_side(monkeypatch, capsys, tmp_path):
    torch = require("torch")
    from fixtures.models.torch_cnn import build

    model = build()
    scripted = tmp_path / "cnn.pt"
    torch.jit.script(model).save(str(scripted))
    exported = tmp_path / "cnn.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(2, 3, 16, 16),)), str(exported))
    for src, dst in ((str(scripted), TORCH_CNN), (TORCH_CNN, str(exported))):
        code, out, err = run_main(monkeypatch, capsys, src, dst, "--input-shape", "2,3,16,16", "--format", "json")
        assert code == 0, err
        found = [f for p in json.loads(out)["pairs"] for f in activation_findings(p)]
        assert len(found) == 2 and all("computes the source's configuration" in f["rule"] for f in found), found
