"""normcheck port (normcheck/model/pairing.py, normcheck/model/port.py, normcheck/report/port.py,
normcheck/cli/port.py): pairing, the comparison after translating conventions, the renderers on
hand-built records, and the fixtures: the PyTorch CNN against its correct Keras port, the port
with seeded defects, the original Keras model (one layer more), a renamed port with --map, and
the CNN's own ONNX export."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
from _models import MODELS, ROOT, inventory
from _require import require

import normcheck.cli as cli
from normcheck.errors import UsageError
from normcheck.model.pairing import BY_MAP, BY_NAME, BY_ORDER, load_map, name_tokens, onnx_scope, pair_layers
from normcheck.model.port import (
    ERROR,
    INFO,
    WARNING,
    compare_inventories,
    compare_layers,
    output_change,
    variance_below,
)
from normcheck.model.records import EVAL, PER_CALL, Inventory, NormLayer, ParamSummary
from normcheck.report.port import render_port

TORCH_CNN = f"{MODELS}/torch_cnn.py:build"
KERAS = f"{MODELS}/keras_cnn.py"


# ---- hand-built layers ------------------------------------------------------------------------


def torch_bn(
    path: str = "bn1", eps: float = 1e-5, momentum: float = 0.1, var: tuple[float, float, float] = (0.5, 2.0, 1.0)
) -> NormLayer:
    return NormLayer(
        path, "bn", "torch.nn.BatchNorm2d", "torch", True, "built-in layer", eps=eps, momentum=momentum,
        momentum_weights="new", weight=True, bias=True, axes=(0, 2, 3), channel_axis=1, feature_shape=(8,),
        running_stats=True, mode=EVAL, dtype="float32",
        params=(ParamSummary("running_var", f"{path}.running_var", (8,), "float32", *var),),
    )  # fmt: skip


def keras_bn(
    path: str = "bn1", eps: float = 1e-5, momentum: float = 0.9, var: tuple[float, float, float] = (0.5, 2.0, 1.0)
) -> NormLayer:
    return NormLayer(
        path, "bn", "keras.layers.BatchNormalization", "tensorflow", True, "built-in layer", eps=eps, momentum=momentum,
        momentum_weights="old", weight=True, bias=True, channel_axis=-1, feature_shape=(8,), running_stats=True,
        mode=PER_CALL, dtype="float32",
        params=(ParamSummary("running_var", f"{path}/moving_variance", (8,), "float32", *var),),
    )  # fmt: skip


def gn(path: str, groups: int, framework: str = "torch", eps: float = 1e-5, channels: int = 16, **kw) -> NormLayer:
    kind = {"torch": "torch.nn.GroupNorm", "tensorflow": "keras.layers.GroupNormalization"}[framework]
    axis = 1 if framework == "torch" else -1
    return NormLayer(
        path, "gn", kind, framework, True, "built-in layer", eps=eps, weight=True, bias=True, groups=groups,
        channel_axis=axis, feature_shape=(channels,), dtype="float32", **kw,
    )  # fmt: skip


def other(path: str, op: str, framework: str = "torch", **kw) -> NormLayer:
    return NormLayer(path, op, f"{op} layer", framework, True, "built-in layer", eps=1e-5, dtype="float32", **kw)  # type: ignore[arg-type]


def inv(framework: str, *layers: NormLayer) -> Inventory:
    return Inventory("model", framework, "test", "Model", layers)


def only(findings, prop: str):
    found = [f for f in findings if f.property == prop]
    assert len(found) == 1, findings
    return found[0]


# ---- pairing ----------------------------------------------------------------------------------


def test_names_pair_whatever_the_separators_even_out_of_order():
    src = [torch_bn("layer1.0.bn1"), torch_bn("layer1.1.bn1"), torch_bn("layer2.0.bn1")]
    dst = [keras_bn("layer2/0/bn1"), keras_bn("layer1_1_bn1"), keras_bn("layer1_0_bn1")]
    pairs = pair_layers(src, dst)
    assert [(p.src.path, p.dst.path, p.by) for p in pairs] == [
        ("layer1.0.bn1", "layer1_0_bn1", BY_NAME),
        ("layer1.1.bn1", "layer1_1_bn1", BY_NAME),
        ("layer2.0.bn1", "layer2/0/bn1", BY_NAME),
    ]
    assert name_tokens("Layer1.0/BN1") == ("layer1", "0", "bn1")


def test_onnx_node_names_pair_by_the_module_scope_they_carry():
    assert onnx_scope("/layer1/layer1.0/bn1/BatchNormalization") == "layer1.0.bn1"
    assert onnx_scope("/gn2/Reshape../gn2/Add") == "gn2"
    assert onnx_scope("BatchNormalization_3") is None
    onnx = [
        replace(torch_bn(p), framework="onnxruntime")
        for p in ("/layer1/layer1.1/bn1/BatchNormalization", "/layer1/layer1.0/bn1/BatchNormalization")
    ]
    pairs = pair_layers([torch_bn("layer1.0.bn1"), torch_bn("layer1.1.bn1")], onnx)
    assert [(p.src.path, p.dst.path, p.by) for p in pairs] == [
        ("layer1.0.bn1", "/layer1/layer1.0/bn1/BatchNormalization", BY_NAME),
        ("layer1.1.bn1", "/layer1/layer1.1/bn1/BatchNormalization", BY_NAME),
    ]


def test_a_name_ending_another_pairs_only_when_it_is_the_one_candidate():
    pairs = pair_layers([torch_bn("block.bn1"), torch_bn("block.bn2")], [keras_bn("bn2"), keras_bn("bn1")])
    assert [(p.src.path, p.dst.path, p.by) for p in pairs] == [
        ("block.bn1", "bn1", BY_NAME),
        ("block.bn2", "bn2", BY_NAME),
    ]
    # "bn1" ends both source names: not a name pair, the order pairs them
    pairs = pair_layers([torch_bn("a.bn1"), torch_bn("b.bn1")], [keras_bn("bn1"), keras_bn("x")])
    assert [p.by for p in pairs] == [BY_ORDER, BY_ORDER]


def test_order_pairs_what_names_leave_and_a_missing_layer_is_listed_unpaired():
    src = [torch_bn("features.1"), gn("features.4", 4), other("head.norm", "ln")]
    dst = [keras_bn("batch_normalization"), other("layer_normalization", "ln", "tensorflow")]
    pairs = pair_layers(src, dst)
    assert [(p.src and p.src.path, p.dst and p.dst.path, p.by) for p in pairs] == [
        ("features.1", "batch_normalization", BY_ORDER),
        ("features.4", None, ""),
        ("head.norm", "layer_normalization", BY_ORDER),
    ]
    extra = pair_layers(src[:1], dst)
    assert [(p.src and p.src.path, p.dst.path) for p in extra] == [
        ("features.1", "batch_normalization"),
        (None, "layer_normalization"),
    ]


def test_a_group_norm_ported_as_another_op_still_pairs_by_order():
    pairs = pair_layers([gn("gn", 1)], [other("instance_norm", "in", "tensorflow")])
    assert pairs[0].by == BY_ORDER and pairs[0].dst is not None


def test_the_map_pairs_first(tmp_path):
    src = [torch_bn("bn1"), torch_bn("bn2")]
    dst = [keras_bn("bn2"), keras_bn("bn1")]
    pairs = pair_layers(src, dst, {"bn1": "bn2"})
    assert [(p.src.path, p.dst.path, p.by) for p in pairs] == [("bn1", "bn2", BY_MAP), ("bn2", "bn1", BY_ORDER)]
    with pytest.raises(UsageError, match="no norm layer 'bn9' in the port model"):
        pair_layers(src, dst, {"bn1": "bn9"})
    with pytest.raises(UsageError, match="no norm layer 'x' in the source model"):
        pair_layers(src, dst, {"x": "bn1"})


def test_map_files_toml_json_and_their_errors(tmp_path):
    toml = tmp_path / "map.toml"
    toml.write_text('"layer1.0.bn1" = "block1/bn"\n[ignored]\n', encoding="utf-8")
    with pytest.raises(UsageError, match="expected a table"):
        load_map(toml)
    toml.write_text('[pairs]\n"layer1.0.bn1" = "block1/bn"\n', encoding="utf-8")
    assert load_map(toml) == {"layer1.0.bn1": "block1/bn"}
    js = tmp_path / "map.json"
    js.write_text('{"a": "x", "b": "y"}', encoding="utf-8")
    assert load_map(js) == {"a": "x", "b": "y"}
    js.write_text('{"a": "x", "b": "x"}', encoding="utf-8")
    with pytest.raises(UsageError, match="paired with both"):
        load_map(js)
    js.write_text('{"a": 1}', encoding="utf-8")
    with pytest.raises(UsageError, match="expected a table"):
        load_map(js)
    js.write_text("{", encoding="utf-8")
    with pytest.raises(UsageError, match="not valid JSON"):
        load_map(js)
    toml.write_text("a = ", encoding="utf-8")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_map(toml)
    with pytest.raises(UsageError, match="cannot read it"):
        load_map(tmp_path / "missing.toml")


# ---- the comparison ---------------------------------------------------------------------------


def test_a_correct_torch_to_keras_batch_norm_is_equivalent_with_the_translations_as_info():
    findings = compare_layers(torch_bn(eps=1e-5, momentum=0.1), keras_bn(eps=1e-5, momentum=0.9))
    assert {f.severity for f in findings} == {INFO}
    assert "old = 1 - new" in only(findings, "momentum").rule
    assert only(findings, "running variance").src == "unbiased"
    assert "NCHW <-> NHWC" in only(findings, "layout").rule


def test_keras_default_eps_left_in_is_an_error_with_how_much_at_the_running_variance():
    f = only(compare_layers(torch_bn(eps=1e-5), keras_bn(eps=1e-3)), "eps")
    assert f.severity == ERROR and (f.src, f.dst) == ("1e-05", "0.001")
    assert f.rule == "Keras's default epsilon=0.001 left in; set epsilon=1e-05"
    change = output_change(1.0, 1e-3, 1e-5)
    assert f"{change:.2g}" in f.detail and "running variance's mean 1" in f.detail
    assert change == pytest.approx((1.001 / 1.00001) ** 0.5 - 1, rel=1e-9)


def test_a_tiny_eps_difference_is_a_warning_not_an_error():
    # 1e-5 vs 1.001e-5 (TensorFlow's fused floor): 5e-9 relative at variance 0.5..2, far below float32's rtol
    f = only(compare_layers(torch_bn(eps=1e-5), keras_bn(eps=1.001e-5)), "eps")
    assert f.severity == WARNING
    below = variance_below(1.3e-6, 1e-5, 1.001e-5)
    assert output_change(below, 1.001e-5, 1e-5) == pytest.approx(1.3e-6, rel=1e-3)
    assert f"{below:.3g}" in f.detail
    # ONNX keeps eps as float32: the same eps read back is not a difference
    assert not [f for f in compare_layers(torch_bn(eps=1e-5), keras_bn(eps=9.99999974738e-06)) if f.property == "eps"]


def test_an_eps_below_a_framework_floor_is_compared_after_clamping(monkeypatch):
    from normcheck.frameworks import CONVENTIONS

    monkeypatch.setitem(CONVENTIONS["tensorflow"], "bn", replace(CONVENTIONS["tensorflow"]["bn"], eps_floor=1.001e-5))
    f = only(compare_layers(torch_bn(eps=1e-3), keras_bn(eps=1e-6)), "eps")
    assert f.severity == ERROR and "Keras raises eps below 1.001e-05 to it" in f.rule
    f = only(compare_layers(keras_bn(eps=1.001e-5), keras_bn(eps=1e-6)), "eps")
    assert f.severity == INFO and "the same after clamping" in f.rule


def test_momentum_copied_verbatim_is_a_warning_naming_the_translation():
    f = only(compare_layers(torch_bn(momentum=0.2), keras_bn(momentum=0.2)), "momentum")
    assert f.severity == WARNING
    assert "copied as it is" in f.rule and "set momentum=0.8" in f.rule
    f = only(compare_layers(torch_bn(momentum=0.1), keras_bn(momentum=0.99)), "momentum")
    assert f.severity == WARNING and "Keras's default momentum=0.99 left in; set momentum=0.9" in f.rule


def test_an_onnx_inference_node_does_not_compare_momentum():
    onnx = replace(
        keras_bn(momentum=0.5), framework="onnxruntime", kind="onnx BatchNormalization", channel_axis=1, mode=EVAL
    )
    findings = compare_layers(torch_bn(momentum=0.1), onnx)
    assert only(findings, "momentum").severity == INFO and "inference mode" in only(findings, "momentum").rule
    assert {f.severity for f in findings} == {INFO}


@pytest.mark.parametrize(
    ("src", "dst", "severity"),
    [
        (gn("gn", 1), other("in", "in", "tensorflow"), ERROR),  # G=1 is not instance norm
        (gn("gn", 16), other("in", "in", "tensorflow", feature_shape=(16,)), INFO),  # G=C is
        (gn("gn", 1), other("ln", "ln", "tensorflow", axes=(-3, -2, -1)), WARNING),  # same stats, other affine
        (gn("gn", 1), other("ln", "ln", "tensorflow", axes=(-1,)), ERROR),
        (other("ln", "ln"), other("rms", "rms", "tensorflow"), ERROR),
    ],
)
def test_another_op_is_flagged(src, dst, severity):
    assert only(compare_layers(src, dst), "op").severity == severity


def test_groups_layout_and_group_order():
    findings = compare_layers(gn("gn2", 4), gn("gn2", 32, "tensorflow"))
    assert only(findings, "groups").severity == ERROR and "groups=4" in only(findings, "groups").rule
    assert only(findings, "group order").severity == INFO
    user = replace(gn("gn2", 4, "tensorflow"), confirmed=False, basis="candidate: user layer, unconfirmed", kind="MyGN")
    assert only(compare_layers(gn("gn2", 4), user), "group order").severity == WARNING


def test_affine_missing_is_an_error_unless_the_weight_is_neutral():
    ones = ParamSummary("weight", "gn.weight", (16,), "float32", 1.0, 1.0, 1.0)
    no_affine = replace(gn("gn", 4, "tensorflow"), weight=False, bias=False)
    assert {
        f.severity for f in compare_layers(gn("gn", 4, params=(ones,)), no_affine) if f.property == "affine weight"
    } == {INFO}
    assert (
        only(compare_layers(gn("gn", 4, params=(ones,)), no_affine), "affine bias").severity == WARNING
    )  # no values to say
    w = ParamSummary("weight", "gn.weight", (16,), "float32", 0.5, 1.5, 1.0)
    assert only(compare_layers(gn("gn", 4, params=(w,)), no_affine), "affine weight").severity == ERROR


def test_weights_compared_by_summaries_and_shapes_squeezed():
    w = ParamSummary("weight", "gn2.weight", (16,), "float32", 0.6, 1.5, 1.02)
    onnx_w = ParamSummary("weight", "gn2.weight", (16, 1, 1), "float32", 0.6, 1.5, 1.02 + 1e-9)
    assert not compare_layers(gn("gn2", 4, params=(w,)), gn("gn2", 4, params=(onnx_w,)))
    other_w = replace(w, mean=1.0)
    f = only(compare_layers(gn("gn2", 4, params=(w,)), gn("gn2", 4, params=(other_w,))), "weights")
    assert f.severity == ERROR and "min/max/mean" in f.detail
    per_group = replace(w, shape=(4,))
    assert (
        only(compare_layers(gn("gn2", 4, params=(w,)), gn("gn2", 4, params=(per_group,))), "weights").severity == ERROR
    )


def test_exit_rule_errors_fail_warnings_only_when_strict():
    warning_only = compare_inventories(inv("torch", torch_bn(momentum=0.2)), inv("tensorflow", keras_bn(momentum=0.2)))
    assert not warning_only.failed() and warning_only.failed(strict=True)
    assert warning_only.first_divergence() is not None
    error = compare_inventories(inv("torch", torch_bn(eps=1e-5)), inv("tensorflow", keras_bn(eps=1e-3)))
    assert error.failed()
    missing = compare_inventories(inv("torch", torch_bn(), gn("gn", 4)), inv("tensorflow", keras_bn()))
    assert missing.failed() and missing.counts()["unpaired"] == 1


def test_the_first_divergence_is_the_first_error_then_the_first_warning():
    c = compare_inventories(
        inv("torch", torch_bn("bn1", momentum=0.2), gn("gn2", 4, eps=1e-6)),
        inv("tensorflow", keras_bn("bn1", momentum=0.2), gn("gn2", 4, "tensorflow", eps=1e-3)),
    )
    first = c.summary()["first_divergence"]
    assert (first["src_path"], first["property"], first["severity"]) == ("gn2", "eps", ERROR)
    assert first["text"].startswith(
        "gn2 <-> gn2: eps 1e-06 vs 0.001 (Keras's default epsilon=0.001 left in; set epsilon=1e-06)"
    )


# ---- renderers, on hand-built records ---------------------------------------------------------


def hand_built():
    return compare_inventories(
        inv("torch", torch_bn("layer1.0.bn1", eps=1e-5), gn("gn", 4)),
        inv("tensorflow", keras_bn("layer1_0_bn1", eps=1e-3)),
    )


def test_json_csv_markdown_and_table():
    c = hand_built()
    doc = json.loads(render_port("json", c.records(), c.summary()))
    assert doc["kind"] == "model-port" and doc["schema"] == 1
    assert [p["status"] for p in doc["pairs"]] == ["differs", "unpaired"]
    assert doc["summary"]["first_divergence"]["text"].startswith("layer1.0.bn1 <-> layer1_0_bn1: eps 1e-05 vs 0.001")
    rows = list(csv.DictReader(io.StringIO(render_port("csv", c.records(), c.summary()))))
    assert {r["property"] for r in rows if r["src_path"] == "layer1.0.bn1"} >= {"eps", "momentum", "layout"}
    assert rows[-1]["status"] == "unpaired" and rows[-1]["property"] == "pairing"
    md = render_port("markdown", c.records(), c.summary())
    assert "| layer1.0.bn1 | layer1_0_bn1 | bn | name | differs (error) |" in md and "<br>" in md
    assert "first divergence: layer1.0.bn1 <-> layer1_0_bn1: eps" in md
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(render_port("table", c.records(), c.summary()))
    text = console.export_text()
    assert "unpaired" in text and "first divergence: layer1.0.bn1 <-> layer1_0_bn1" in text


# ---- the fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_inventory():
    require("torch")
    return inventory(TORCH_CNN)


def keras_inventory(name: str):
    require("tensorflow", "keras")
    return inventory(f"{KERAS}:{name}")


def test_the_correct_keras_port_is_equivalent(torch_inventory):
    c = compare_inventories(torch_inventory, keras_inventory("build_port"))
    assert c.counts() == {"equivalent": 2, "differs": 0, "unpaired": 0}
    assert not c.failed(strict=True) and c.first_divergence() is None
    assert [(p.src.path, p.dst.path, p.paired_by) for p in c.pairs] == [("bn1", "bn1", "name"), ("gn2", "gn2", "name")]


def test_the_seeded_defects_are_found_at_their_layers_with_their_rules(torch_inventory):
    c = compare_inventories(torch_inventory, keras_inventory("build_port_with_defects"))
    bn1, gn2 = c.pairs
    momentum = only(bn1.findings, "momentum")
    assert momentum.severity == WARNING and "set momentum=0.8" in momentum.rule
    assert [f.property for f in bn1.findings if f.severity != INFO] == ["momentum"]
    eps = only(gn2.findings, "eps")
    assert eps.severity == ERROR and eps.rule == "Keras's default epsilon=0.001 left in; set epsilon=1e-06"
    assert [f.property for f in gn2.findings if f.severity != INFO] == ["eps"]
    assert c.failed() and c.first_divergence() is gn2


def test_a_layer_the_source_lacks_is_listed_unpaired(torch_inventory):
    c = compare_inventories(torch_inventory, keras_inventory("build"))  # the original has a head/ln
    unpaired = [p for p in c.pairs if p.status == "unpaired"]
    assert [(p.src, p.dst.path) for p in unpaired] == [(None, "head/ln")]
    assert c.pairs[-1] is unpaired[0]


def test_a_renamed_port_pairs_by_the_map(torch_inventory):
    renamed = keras_inventory("build_port_renamed")
    c = compare_inventories(torch_inventory, renamed, {"bn1": "norm_a", "gn2": "norm_b"})
    assert [(p.dst.path, p.paired_by) for p in c.pairs] == [("norm_a", "map"), ("gn2" and "norm_b", "map")]
    assert not c.failed(strict=True)
    crossed = compare_inventories(torch_inventory, renamed, {"bn1": "norm_b"})
    assert crossed.failed() and {f.property for f in crossed.pairs[0].findings if f.severity == ERROR} >= {"op"}


def test_the_cnn_against_its_own_onnx_export_is_equivalent(torch_inventory, tmp_path):
    pytest.importorskip("onnx")
    sys.path.insert(0, str(MODELS))
    try:
        import torch_cnn
    finally:
        sys.path.remove(str(MODELS))
    path = torch_cnn.export_onnx(str(tmp_path / "cnn.onnx"))
    c = compare_inventories(torch_inventory, inventory(path))
    assert [(p.src.path, p.dst.path, p.paired_by) for p in c.pairs] == [
        ("bn1", "/bn1/BatchNormalization", "name"),
        ("gn2", "/gn2/Reshape../gn2/Add", "name"),
    ]
    assert not c.failed(strict=True)
    assert "inference mode" in only(c.pairs[0].findings, "momentum").rule


# ---- the command line -------------------------------------------------------------------------


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["normcheck", "port", *args])
    with pytest.raises(SystemExit) as info:
        cli.main()
    out, err = capsys.readouterr()
    return info.value.code, out, err


def test_cli_exit_codes_and_the_summary_lines(monkeypatch, capsys, tmp_path):
    require("torch")
    require("tensorflow", "keras")
    code, out, err = run_main(monkeypatch, capsys, TORCH_CNN, f"{KERAS}:build_port", "--format", "json")
    assert code == 0 and json.loads(out)["summary"]["status"]["equivalent"] == 2
    assert err.startswith("normcheck port: 2 pairs: 2 equivalent; 0 errors, 0 warnings") and len(err.splitlines()) == 1
    code, out, err = run_main(monkeypatch, capsys, TORCH_CNN, f"{KERAS}:build_port_with_defects", "--format", "csv")
    assert code == 1
    assert (
        "normcheck port: first divergence: gn2 <-> gn2: eps 1e-06 vs 0.001 (Keras's default epsilon=0.001 left in"
        in err
    )
    mapping = tmp_path / "map.toml"
    mapping.write_text('"bn1" = "norm_a"\n"gn2" = "norm_b"\n', encoding="utf-8")
    code, out, err = run_main(
        monkeypatch, capsys, TORCH_CNN, f"{KERAS}:build_port_renamed", "--map", str(mapping), "--format", "json"
    )
    assert code == 0 and [p["paired_by"] for p in json.loads(out)["pairs"]] == ["map", "map"]


def test_cli_usage_errors_exit_2(monkeypatch, capsys, tmp_path):
    bad = tmp_path / "map.json"
    bad.write_text("{", encoding="utf-8")
    code, out, err = run_main(monkeypatch, capsys, TORCH_CNN, f"{KERAS}:build_port", "--map", str(bad))
    assert code == 2 and out == "" and err.startswith("normcheck: error: --map ") and "not valid JSON" in err
    code, out, err = run_main(monkeypatch, capsys, TORCH_CNN, str(tmp_path / "missing.onnx"))
    assert code == 2 and out == "" and "missing.onnx" in err
    code, out, err = run_main(monkeypatch, capsys, TORCH_CNN, TORCH_CNN, "--format", "xml")
    assert code == 2 and "unknown format" in err


def test_cli_in_real_workers_side_by_side():
    require("torch")
    require("tensorflow", "keras")
    proc = subprocess.run(
        [sys.executable, "-m", "normcheck", "port", TORCH_CNN, f"{KERAS}:build_port_with_defects", "--format", "json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=240,
        env={**os.environ, "NORMCHECK_INLINE": "0"},
    )
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert [p["severity"] for p in doc["pairs"]] == ["warning", "error"]
    assert doc["summary"]["src"]["framework"] == "torch" and doc["summary"]["dst"]["framework"] == "tensorflow"


def test_a_batch_norm_folded_into_the_convolution_by_the_exporter_is_a_warning(torch_inventory, tmp_path):
    pytest.importorskip("onnx")
    import warnings

    import torch

    sys.path.insert(0, str(MODELS))
    try:
        import torch_cnn
    finally:
        sys.path.remove(str(MODELS))
    path = str(tmp_path / "folded.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch_cnn.build(), (torch.randn(2, 3, 16, 16),), path, dynamo=False, do_constant_folding=True)
    c = compare_inventories(torch_inventory, inventory(path))
    folded = [p for p in c.pairs if p.status == "unpaired"]
    assert [(p.src.path, p.severity) for p in folded] == [("bn1", WARNING)]
    assert "do_constant_folding=False" in folded[0].findings[0].rule
    assert not c.failed() and c.failed(strict=True)


def test_inline_workers_run_one_after_the_other_in_this_thread(monkeypatch):
    """Inline workers share this process: two threads would share its global state (torch's
    random generator made a port's two sides build different weights), so they run in turn."""
    import threading

    from normcheck.cli.port import _side_by_side

    monkeypatch.setenv("NORMCHECK_INLINE", "1")
    seen: list[tuple[str, str]] = []

    def record(name: str) -> str:
        seen.append((name, threading.current_thread().name))
        return name

    assert _side_by_side(lambda: record("source"), lambda: record("port")) == ("source", "port")
    main = threading.main_thread().name
    assert seen == [("source", main), ("port", main)]
    monkeypatch.setenv("NORMCHECK_INLINE", "0")
    seen.clear()
    assert _side_by_side(lambda: record("source"), lambda: record("port")) == ("source", "port")
    assert {thread for _, thread in seen} != {main}  # real workers: waited on side by side, in threads
