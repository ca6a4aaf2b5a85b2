"""normcheck model --input-shape on Flax models (linen and nnx): every norm layer run as it is in
the model, with its own variables and mode, on its captured activation and on the hostile input
kinds, forward and backward, against the float64 reference. The models run in this process
(NORMCHECK_INLINE=1) except where isolation is the point."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import numpy as np
import pytest
from _require import require

require("jax", "flax")

from _models import MODELS, normcheck_model

import normcheck.cli as cli

FLAX = f"{MODELS}/flax_models.py"
BUGGY = f"{MODELS}/buggy_flax.py"
KINDS = {"captured", "large_mean", "tiny_scale", "constant", "half_range"}


def checked(monkeypatch, capsys, *args: str) -> tuple[int, dict, str]:
    monkeypatch.setattr(sys, "argv", ["normcheck", "model", *args, "--format", "json"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    out, err = capsys.readouterr()
    return info.value.code, json.loads(out) if out else {}, err


def not_passing(doc: dict) -> list[dict]:
    return [r for r in doc["results"] if r["status"] != "pass"]


def rows_of(doc: dict, path: str) -> list[dict]:
    return [r for r in doc["results"] if r["impl"].split(" ")[0] == path]


def test_the_linen_cnn_passes_and_its_one_pass_variance_rows_are_the_known_defect(monkeypatch, capsys):
    code, doc, err = checked(monkeypatch, capsys, f"{FLAX}:build", "--input-shape", "2,8,8,3")
    assert code == 0, not_passing(doc)
    assert {r["impl"] for r in doc["results"]} == {
        "bn1 (flax.linen.BatchNorm)",
        "gn2 (flax.linen.GroupNorm)",
        "head/LayerNorm_0 (flax.linen.LayerNorm)",  # @compact: found on the input shape, with its settings
    }
    assert {r["input"] for r in doc["results"]} == KINDS
    bn = rows_of(doc, "bn1")
    assert {r["check"] for r in bn} == {
        "forward",
        "grad_input",
        "grad_weight",
        "grad_bias",
        "running_mean",
        "running_var",
    }
    assert {r["params"] for r in bn} == {"eval"}
    # channels last in the model, channels at axis 1 in the records (the reference's layout)
    assert {r["shape"] for r in rows_of(doc, "gn2") if r["input"] == "captured"} == {"2x16x8x8"}
    # the layer norm keeps Flax's default use_fast_variance=True: its large_mean and constant
    # failures are the documented one-pass variance, reproduced (not put down to it on a guess)
    known = [r for r in doc["results"] if r["status"] == "known"]
    assert known and {r["impl"].split(" ")[0] for r in known} == {"head/LayerNorm_0"}
    assert all(r["diagnosis"]["hypothesis"] == "one_pass_variance" for r in known)
    assert not [r for r in doc["results"] if r["status"] in ("fail", "error", "skip")]
    assert "0 failed" in err


def test_the_gn_with_use_fast_variance_false_passes_every_kind_outright(monkeypatch, capsys):
    code, doc, _ = checked(monkeypatch, capsys, f"{FLAX}:build", "--input-shape", "2,8,8,3", "--kinds", "large_mean")
    gn = rows_of(doc, "gn2")
    assert code == 0 and gn and {r["status"] for r in gn} == {"pass"}


def test_linen_training_mode_batch_norm_uses_batch_statistics_and_updates_running_ones(monkeypatch, capsys):
    code, doc, _ = checked(monkeypatch, capsys, f"{FLAX}:build_linen_training", "--input-shape", "2,8,8,3")
    assert code == 0, not_passing(doc)
    bn = rows_of(doc, "BatchNorm_0")  # its mode comes from the call: use_running_average=not self.train
    assert {r["params"] for r in bn} == {"train"}
    assert {"running_mean", "running_var"} <= {r["check"] for r in bn if r["status"] == "pass"}
    assert {r["impl"].split(" ")[0] for r in doc["results"]} == {"BatchNorm_0", "InstanceNorm_0", "RMSNorm_0"}
    assert not [r for r in doc["results"] if r["status"] in ("fail", "error", "skip")]


@pytest.mark.parametrize("factory, mode", [("build_nnx_eval", "eval"), ("build_nnx_training", "train")])
def test_nnx_models(monkeypatch, capsys, factory, mode):
    code, doc, _ = checked(monkeypatch, capsys, f"{FLAX}:{factory}", "--input-shape", "2,8,8,3")
    assert code == 0, not_passing(doc)
    assert {r["impl"] for r in doc["results"]} == {
        "bn1 (flax.nnx.BatchNorm)",
        "gn2 (flax.nnx.GroupNorm)",
        "head_norm (flax.nnx.RMSNorm)",
    }
    assert {r["params"] for r in rows_of(doc, "bn1")} == {mode}
    assert not [r for r in doc["results"] if r["status"] in ("fail", "error", "skip")]


def test_the_capture_pass_leaves_an_nnx_model_as_it_was(tmp_path):
    import flax.nnx as nnx

    from fixtures.models.flax_models import build_nnx_training
    from normcheck.model.flax_checks import check_flax
    from normcheck.model.loaders import Loaded, inspect_model

    model = build_nnx_training()
    loaded = Loaded("nnx", model, "NnxCNN")
    before = {k: np.array(v) for k, v in (("mean", model.bn1.mean[...]), ("var", model.bn1.var[...]))}
    call = nnx.BatchNorm.__call__
    sent: list = []
    inventory = inspect_model(loaded)
    check_flax(loaded, inventory, ((2, 8, 8, 3),), None, ("captured",), 0, str(tmp_path), sent.append)
    assert [kind for kind, _ in sent] == ["layer"] * 3
    np.testing.assert_array_equal(np.array(model.bn1.mean[...]), before["mean"])
    np.testing.assert_array_equal(np.array(model.bn1.var[...]), before["var"])
    assert nnx.BatchNorm.__call__ is call and not list(tmp_path.iterdir())  # unwrapped; activations deleted


def test_an_npz_input_finds_compact_layers_when_the_model_runs(monkeypatch, capsys, tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, x=np.random.default_rng(1).standard_normal((3, 8, 8, 3)).astype(np.float32))
    code, doc, _ = checked(monkeypatch, capsys, f"{FLAX}:build", "--input", str(path), "--kinds", "captured")
    assert code == 0, not_passing(doc)
    ln = rows_of(doc, "head/LayerNorm_0")
    assert ln and {r["status"] for r in ln} == {"pass"} and ln[0]["shape"] == "3x10"


def test_rms_norm_with_eps_outside_the_root_is_probed_then_fails_with_that_cause(monkeypatch, capsys):
    code, doc, _ = checked(monkeypatch, capsys, f"{BUGGY}:eps_outside_rms_norm", "--input-shape", "2,8,8,3")
    assert code == 1
    bad = not_passing(doc)
    assert bad and {r["impl"].split(" ")[0] for r in bad} == {"user_norm"}  # the batch norm before it passes
    assert all(r["status"] == "fail" for r in bad)
    assert "probed: rms, eps 1e-05, but for one known mistake" in bad[0]["impl"]
    tiny = [r for r in bad if r["input"] == "tiny_scale"]
    assert {r["check"] for r in tiny} == {"forward", "grad_input", "grad_weight"}
    assert all(r["diagnosis"]["hypothesis"] == "eps_outside_sqrt" for r in bad)


def test_a_layer_norm_over_the_wrong_axis_stays_unconfirmed(monkeypatch, capsys):
    code, doc, _ = checked(monkeypatch, capsys, f"{BUGGY}:wrong_axis_layer_norm", "--input-shape", "2,8,8,3")
    assert code == 0  # never a failing verdict on a guess
    (row,) = not_passing(doc)
    assert row["status"] == "skip" and row["impl"] == "user_norm (buggy_flax.WrongAxisLayerNorm)"
    assert row["message"].startswith("unconfirmed: behaves like no normalization normcheck knows")


def test_an_nnx_one_pass_layer_norm_fails_on_large_mean_with_that_cause(monkeypatch, capsys):
    code, doc, _ = checked(monkeypatch, capsys, f"{BUGGY}:one_pass_layer_norm_nnx", "--input-shape", "4,3")
    assert code == 1
    bad = not_passing(doc)
    assert {(r["impl"], r["input"], r["status"]) for r in bad} == {
        ("norm (buggy_flax.OnePassLayerNorm; probed: ln, eps 1e-05)", "large_mean", "fail")
    }
    assert {r["diagnosis"]["hypothesis"] for r in bad} == {"one_pass_variance"}
    assert {r["status"] for r in rows_of(doc, "ln")} == {"pass"}  # nnx.LayerNorm(use_fast_variance=False)


def test_a_wrong_input_shape_is_one_line_and_exit_2(monkeypatch, capsys):
    code, doc, err = checked(monkeypatch, capsys, f"{FLAX}:build", "--input-shape", "2,8,8,5")
    assert code == 2 and doc == {} and len(err.splitlines()) == 1
    assert "the model raised" in err and "before reaching any norm layer" in err and "2x8x8x5 float32" in err


# ---- runner_for: the interface normcheck port runs a layer through ------------------------------


def test_runner_for_finds_a_layer_by_its_path_and_runs_it_in_the_reference_layout():
    from fixtures.models.flax_models import build
    from normcheck.model import checks
    from normcheck.model.flax_checks import runner_for
    from normcheck.model.loaders import Loaded, inspect_model

    module, variables = build()
    loaded = Loaded("linen", module, "LinenCNN", variables=variables)
    layers = {layer.path: layer for layer in inspect_model(loaded).layers}
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 16)).astype(np.float32).astype(np.float64)
    runner = runner_for(loaded, layers["gn2"], x, "float32")
    assert isinstance(runner, checks.LayerRunner)
    assert runner.permutation == (0, 3, 1, 2) and runner.label == "gn2 (flax.linen.GroupNorm)"
    assert runner.from_reference(runner.to_reference(x)).shape == x.shape
    rows = runner.rows(x, ("captured",), 0, "gn2")
    assert rows and {r.status for r in rows} == {"pass"} and rows[0].case.shape == (2, 16, 8, 8)
    # the rows are the layer's: read with another eps, the same run fails where eps shows
    wrong = replace(runner, setup=replace(runner.setup, eps=1e-3))
    assert "fail" in {r.status for r in wrong.rows(x, ("tiny_scale",), 0, "gn2")}
    # a (module, variables) tuple works too; a @compact layer needs an input to exist
    assert isinstance(
        runner_for((module, variables), layers["bn1"], np.zeros((2, 8, 8, 8)), "float32"), checks.LayerRunner
    )
    compact = runner_for((module, variables), layers["head/LayerNorm_0"], np.zeros((2, 10)), "float32")
    assert isinstance(compact, str) and "@compact" in compact
    with_input = runner_for((module, variables, (2, 8, 8, 3)), layers["head/LayerNorm_0"], np.zeros((2, 10)), "float32")
    assert isinstance(with_input, checks.LayerRunner)
    assert "needs its variables" in runner_for(module, layers["bn1"], x, "float32")


@pytest.mark.slow
def test_the_command_in_its_worker(real_workers):
    proc = normcheck_model(f"{FLAX}:build", "--input-shape", "2,8,8,3", "--format", "json", timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["results"]
    assert {r["status"] for r in rows} == {"pass", "known"} and len(rows) == 70
