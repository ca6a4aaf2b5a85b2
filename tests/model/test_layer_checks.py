"""normcheck model --input-shape / --input: every norm layer checked on its captured activation
and on the hostile input kinds, with verify's tolerance, diagnosis and records. The models run
in this process (NORMCHECK_INLINE=1) except where isolation is the point."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from _models import MODELS, normcheck_model
from _require import require

import normcheck.cli as cli
from normcheck.model.checks import HOSTILE_LIMIT, hostile_shape
from normcheck.ops import OpParams

CNN = f"{MODELS}/torch_cnn.py:build"
BUGGY = f"{MODELS}/buggy_torch.py"
KINDS = {"captured", "large_mean", "tiny_scale", "constant", "half_range"}


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["normcheck", "model", *args])
    with pytest.raises(SystemExit) as info:
        cli.main()
    out, err = capsys.readouterr()
    return info.value.code, out, err


def checked(monkeypatch, capsys, *args: str) -> tuple[int, dict, str]:
    code, out, err = run_main(monkeypatch, capsys, *args, "--format", "json")
    return code, json.loads(out), err


def not_passing(doc: dict) -> list[dict]:
    return [r for r in doc["results"] if r["status"] != "pass"]


# ---- torch -------------------------------------------------------------------------------------


def test_the_small_cnn_passes_every_check_of_every_layer(monkeypatch, capsys):
    require("torch")
    code, doc, err = checked(monkeypatch, capsys, CNN, "--input-shape", "2,3,16,16")
    assert code == 0, not_passing(doc)
    assert not not_passing(doc)
    impls = {r["impl"] for r in doc["results"]}
    assert impls == {"bn1 (torch.nn.BatchNorm2d)", "gn2 (torch.nn.GroupNorm)"}
    assert {r["input"] for r in doc["results"]} == KINDS
    bn = {r["check"] for r in doc["results"] if r["impl"].startswith("bn1")}
    assert bn == {"forward", "grad_input", "grad_weight", "grad_bias", "running_mean", "running_var"}
    captured = [r for r in doc["results"] if r["input"] == "captured" and r["impl"].startswith("gn2")]
    assert captured[0]["shape"] == "2x16x16x16"  # the layer's real activation
    assert [layer["path"] for layer in doc["model"]["layers"]] == ["bn1", "gn2"]
    assert "2 normalization layers" in err and "0 failed" in err


def test_a_layer_called_twice_says_so_in_its_rows(monkeypatch, capsys, tmp_path):
    require("torch")
    path = tmp_path / "twice.py"
    path.write_text(
        "import torch\n\n"
        "class Twice(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.ln = torch.nn.LayerNorm(8)\n"
        "    def forward(self, x):\n"
        "        return self.ln(self.ln(x) * 2.0)\n\n"
        "def build():\n"
        "    return Twice().eval()\n"
    )
    code, doc, _ = checked(monkeypatch, capsys, f"{path}:build", "--input-shape", "2,4,8", "--kinds", "captured")
    assert code == 0, not_passing(doc)
    assert {r["impl"] for r in doc["results"]} == {
        "ln (torch.nn.LayerNorm; called 2 times: checked on its first input)"
    }


def test_a_model_in_training_mode_is_checked_with_batch_statistics(monkeypatch, capsys):
    require("torch")
    code, doc, _ = checked(monkeypatch, capsys, f"{MODELS}/torch_cnn.py:build_training", "--input-shape", "2,3,8,8")
    assert code == 0, not_passing(doc)
    bn = [r for r in doc["results"] if r["impl"].startswith("bn1") and r["input"] == "captured"]
    assert {r["params"] for r in bn} == {"train"} and {"running_mean", "running_var"} <= {r["check"] for r in bn}


def test_the_table_starts_with_the_inventory(monkeypatch, capsys):
    require("torch")
    code, out, _ = run_main(monkeypatch, capsys, CNN, "--input-shape", "2,3,8,8", "--kinds", "captured")
    assert code == 0
    assert out.index("0.2 (new)") < out.index("batch norm (bn)")  # inventory, then the checks


@pytest.mark.parametrize("fmt, start", [("csv", "op,framework,impl"), ("junit", "<?xml"), ("markdown", "### ")])
def test_other_formats(monkeypatch, capsys, fmt, start):
    require("torch")
    code, out, _ = run_main(
        monkeypatch, capsys, CNN, "--input-shape", "2,3,8,8", "--kinds", "captured", "--format", fmt
    )
    assert code == 0 and out.startswith(start) and "gn2 (torch.nn.GroupNorm)" in out


def test_input_from_an_npz_file(monkeypatch, capsys, tmp_path):
    require("torch")
    path = tmp_path / "x.npz"
    np.savez(path, x=np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32))
    code, doc, _ = checked(monkeypatch, capsys, CNN, "--input", str(path), "--kinds", "captured")
    assert code == 0 and {r["shape"] for r in doc["results"]} == {"3x8x8x8", "3x16x8x8"}


def test_group_norm_with_eps_outside_the_root_is_probed_then_fails_with_that_cause(monkeypatch, capsys):
    require("torch")
    code, doc, _ = checked(monkeypatch, capsys, f"{BUGGY}:eps_outside_group_norm", "--input-shape", "2,3,8,8")
    assert code == 1
    bad = not_passing(doc)
    assert bad and {r["impl"].split(" ")[0] for r in bad} == {"norm"}  # the batch norm before it passes
    assert all(r["status"] == "fail" for r in bad)
    tiny = [r for r in bad if r["input"] == "tiny_scale"]
    assert tiny and all(r["diagnosis"]["hypothesis"] == "eps_outside_sqrt" for r in tiny)
    assert "probed: gn, eps 1e-05" in bad[0]["impl"]


def test_a_layer_norm_2d_over_the_wrong_axis_stays_unconfirmed(monkeypatch, capsys):
    require("torch")
    code, doc, _ = checked(monkeypatch, capsys, f"{BUGGY}:wrong_axis_layer_norm", "--input-shape", "2,3,8,8")
    assert code == 0  # never a failing verdict on a guess
    (row,) = not_passing(doc)
    assert row["status"] == "skip" and row["impl"].startswith("norm (")
    assert row["message"].startswith("unconfirmed: behaves like no normalization normcheck knows")


def test_a_layer_norm_over_the_channels_is_probed_as_one(monkeypatch, capsys):
    require("torch")
    code, doc, _ = checked(monkeypatch, capsys, f"{BUGGY}:channels_layer_norm", "--input-shape", "2,3,8,8")
    assert code == 0, not_passing(doc)
    rows = [r for r in doc["results"] if r["impl"].startswith("norm (")]
    assert {r["impl"] for r in rows} == {
        "norm (buggy_torch.ChannelsLayerNorm2d; probed: ln over the channels (axis 1), eps 1e-06)"
    }
    assert {r["check"] for r in rows} == {"forward", "grad_input", "grad_weight", "grad_bias"}
    assert {r["shape"] for r in rows if r["input"] == "captured"} == {"2x8x8x8"}


def test_llama_and_gemma_rms_norms_are_probed_and_checked(monkeypatch, capsys):
    require("torch")
    code, doc, _ = checked(monkeypatch, capsys, f"{MODELS}/torch_transformer.py:build", "--input-shape", "2,8,32")
    assert code == 0, not_passing(doc)
    impls = {r["impl"] for r in doc["results"]}
    assert "input_layernorm (torch_transformer.LlamaRMSNorm; probed: rms, eps 1e-06)" in impls
    assert any(i.startswith("post_attention_layernorm") and "1 + w" in i for i in impls)
    assert {r["input"] for r in doc["results"] if r["impl"].startswith("post_attention")} == KINDS


def test_a_model_that_raises_in_forward_is_one_line_and_exit_2(real_workers):
    require("torch")
    proc = normcheck_model(f"{BUGGY}:raises_in_forward", "--input-shape", "2,3,4,5")
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1
    assert "the model raised ValueError: cannot reshape" in proc.stderr and "after its norm layer bn" in proc.stderr


def test_a_layer_whose_check_hangs_is_an_error_row_naming_it(real_workers):
    require("torch")
    proc = normcheck_model(
        f"{BUGGY}:hangs_in_a_layer", "--input-shape", "2,8", "--timeout", "30", "--format", "json", timeout=150
    )
    assert proc.returncode == 1, proc.stderr
    rows = json.loads(proc.stdout)["results"]
    by_layer = {}
    for r in rows:
        by_layer.setdefault(r["impl"].split(" ")[0], set()).add(r["status"])
    assert by_layer["0"] == {"pass"} and by_layer["1"] == {"error"} and by_layer["2"] == {"skip"}
    (error,) = [r for r in rows if r["status"] == "error"]
    assert "took longer than 30 s" in error["message"] and error["impl"].startswith("1 (buggy_torch.SlowRMSNorm")


def test_a_wrong_input_shape_is_one_line_and_exit_2(monkeypatch, capsys):
    require("torch")
    code, out, err = run_main(monkeypatch, capsys, CNN, "--input-shape", "2,5,8,8")
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert "the model raised RuntimeError" in err and "before reaching any norm layer" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--input-shape", "2,3,8,8", "--input", "x.npz"], "not both"),
        (["--input", "x.txt"], "give a .npy or .npz file"),
        (["--input-shape", "2,3,8,8", "--kinds", "lunar"], "unknown input kind 'lunar'"),
        (["--input-shape", "2,3,8,8", "--dtype", "int8"], "unknown dtype 'int8'"),
        (["--input-shape", "2,a"], "malformed shape"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(monkeypatch, capsys, args, message):
    code, out, err = run_main(monkeypatch, capsys, CNN, *args)
    assert code == 2 and out == "" and message in err and len(err.splitlines()) == 1


def test_hostile_shapes_keep_what_the_statistics_run_over():
    assert hostile_shape("bn", (1, 64, 112, 112), OpParams(mode="eval", running_stats=True)) == (1, 64, 28, 28)
    assert hostile_shape("ln", (8, 197, 768), OpParams(normalized_ndim=1))[-1] == 768
    assert np.prod(hostile_shape("gn", (4, 32, 64, 64), OpParams(groups=8))) <= HOSTILE_LIMIT
    assert hostile_shape("bn", (2, 3, 4, 4), OpParams(mode="train", running_stats=True)) == (2, 3, 4, 4)


# ---- ONNX --------------------------------------------------------------------------------------


def onnx_check(monkeypatch, capsys, onnx_file, model, shape: str, *extra: str) -> tuple[int, dict]:
    path = onnx_file(model)
    code, doc, _ = checked(monkeypatch, capsys, path, "--input-shape", shape, *extra)
    return code, doc


def test_a_float16_layer_norm_written_out_overflows_on_large_mean(monkeypatch, capsys, onnx_file):
    require("onnxruntime", "onnx")
    from fixtures.models.onnx_graphs import half_layer_norm

    code, doc = onnx_check(monkeypatch, capsys, onnx_file, half_layer_norm(), "2,8,32", "--runtime", "onnx-reference")
    assert code == 1
    (row,) = [r for r in not_passing(doc) if r["input"] == "large_mean" and r["check"] == "forward"]
    assert row["status"] == "fail" and row["impl"] == "ln16/mean..ln16/add_bias (decomposed layer norm)"
    assert row["diagnosis"]["family"] == "numeric" and "overflows float16" in row["diagnosis"]["cause"]
    assert all(r["status"] != "fail" or r["diagnosis"]["family"] != "formula" for r in doc["results"])


def test_onnxruntime_cpu_runs_that_float16_graph_in_float32(monkeypatch, capsys, onnx_file):
    require("onnxruntime", "onnx")
    from fixtures.models.onnx_graphs import half_layer_norm

    code, doc = onnx_check(monkeypatch, capsys, onnx_file, half_layer_norm(), "2,8,32")
    assert code == 0 and not [r for r in doc["results"] if r["status"] in ("fail", "error")]
    assert {r["dtype"] for r in doc["results"]} == {"float16"}


def test_a_one_pass_layer_norm_fails_on_large_mean_with_that_cause(monkeypatch, capsys, onnx_file):
    require("onnxruntime", "onnx")
    from fixtures.models.onnx_graphs import one_pass_layer_norm

    code, doc = onnx_check(monkeypatch, capsys, onnx_file, one_pass_layer_norm(), "4,16")
    assert code == 1
    failed = [r for r in doc["results"] if r["status"] == "fail"]
    assert {(r["impl"], r["input"], r["check"]) for r in failed} == {
        ("ln1p/mean..ln1p/add_bias (decomposed layer norm)", "large_mean", "forward")
    }
    assert failed[0]["diagnosis"]["hypothesis"] == "one_pass_variance"
    grads = [r for r in doc["results"] if r["check"] == "grad_input"]
    assert grads and all(r["status"] == "skip" for r in grads)  # ONNX has no gradients


def test_eps_outside_the_root_in_an_onnx_graph(monkeypatch, capsys, onnx_file):
    require("onnxruntime", "onnx")
    from fixtures.models.onnx_graphs import eps_outside_sqrt

    code, doc = onnx_check(monkeypatch, capsys, onnx_file, eps_outside_sqrt(), "4,16", "--kinds", "tiny_scale")
    (row,) = [r for r in doc["results"] if r["status"] == "fail"]
    assert code == 1 and row["diagnosis"]["hypothesis"] == "eps_outside_sqrt"


@pytest.mark.parametrize(
    "builder, shape",
    [
        ("decomposed_layer_norm_fp16", "2,8,32"),
        ("decomposed_rms_norm", "2,8,64"),
        ("decomposed_group_norm", "2,8,4,4"),
        ("fused_layer_norm", "2,8,4,6"),
        ("fused_norms", "2,4,5,5"),
    ],
)
def test_correct_onnx_layers_pass(monkeypatch, capsys, onnx_file, builder, shape):
    require("onnxruntime", "onnx")
    from fixtures.models import onnx_graphs

    code, doc = onnx_check(monkeypatch, capsys, onnx_file, getattr(onnx_graphs, builder)(), shape)
    assert code == 0, not_passing(doc)
    ran = [r for r in doc["results"] if r["check"] == "forward"]
    assert ran and all(r["status"] == "pass" for r in ran) and {r["input"] for r in ran} == KINDS


def test_gemma_weight_in_onnx_is_applied_as_one_plus_w(monkeypatch, capsys, onnx_file):
    require("onnxruntime", "onnx")
    from fixtures.models.onnx_graphs import decomposed_rms_norm

    code, doc = onnx_check(monkeypatch, capsys, onnx_file, decomposed_rms_norm(gemma=True), "2,8,64")
    assert code == 0, not_passing(doc)


def test_onnx_group_norm_21_is_a_known_defect_and_strict_fails_on_it(monkeypatch, capsys, onnx_file):
    require("onnxruntime", "onnx")
    from fixtures.models.onnx_graphs import fused_group_norm

    code, doc = onnx_check(monkeypatch, capsys, onnx_file, fused_group_norm(), "2,8,4,4", "--kinds", "large_mean")
    known = [r for r in doc["results"] if r["status"] == "known"]
    assert code == 0 and known and known[0]["diagnosis"]["hypothesis"] == "one_pass_variance"
    code, _ = onnx_check(
        monkeypatch, capsys, onnx_file, fused_group_norm(), "2,8,4,4", "--kinds", "large_mean", "--strict"
    )
    assert code == 1
