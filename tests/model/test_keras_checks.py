"""normcheck model --input-shape on Keras 3 models: every norm layer captured in one run (its
``call`` wrapped: functional, Sequential, subclassed and nested layers alike) and checked by
calling the model's own layer object, channels last, in inference (and a per-call batch norm in
training too), with verify's tolerance, diagnosis and records. The models run in this process
(NORMCHECK_INLINE=1)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from _require import require

keras = require("tensorflow", "keras")

from _models import MODELS, inventory

import normcheck.cli as cli

GOOD = f"{MODELS}/keras_models.py"
BUGGY = f"{MODELS}/buggy_keras.py"
KINDS = {"captured", "large_mean", "tiny_scale", "constant", "half_range"}
GRADS = {"forward", "grad_input", "grad_weight", "grad_bias"}


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


def by_layer(doc: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in doc["results"]:
        out.setdefault(r["impl"], []).append(r)
    return out


# ---- correct models pass --------------------------------------------------------------------------


def test_a_functional_model_passes_every_check_of_every_layer(monkeypatch, capsys):
    code, doc, err = checked(monkeypatch, capsys, f"{GOOD}:functional", "--input-shape", "2,8,8,3")
    assert code == 0, not_passing(doc)
    assert not not_passing(doc)
    layers = by_layer(doc)
    assert set(layers) == {
        "ln_in (keras.layers.LayerNormalization)",
        "bn (keras.layers.BatchNormalization)",
        "bn (keras.layers.BatchNormalization; training=True)",
        "gn (keras.layers.GroupNormalization)",
        "inorm (keras.layers.GroupNormalization(groups=-1))",
        "ln_hw (keras.layers.LayerNormalization)",
        "ln (keras.layers.LayerNormalization)",
        "rms (keras.layers.RMSNormalization)",
    }
    assert all({r["input"] for r in rows} == KINDS for rows in layers.values())
    # channels last, checked in the reference's layout: (N, H, W, C) is reported as (N, C, H, W)
    captured = {r["impl"].split(" ")[0]: r["shape"] for r in doc["results"] if r["input"] == "captured"}
    assert captured["bn"] == "2x8x8x8" and captured["inorm"] == "2x8x8x8" and captured["ln"] == "2x64x16"
    assert captured["ln_hw"] == "2x8x8x8"  # axes [1, 2] of NHWC moved last: (N, C, H, W)
    bn = {r["check"]: r["params"] for r in layers["bn (keras.layers.BatchNormalization)"]}
    assert set(bn) == GRADS | {"running_mean", "running_var"} and set(bn.values()) == {"eval"}
    train = {r["check"]: r["params"] for r in layers["bn (keras.layers.BatchNormalization; training=True)"]}
    assert set(train) == GRADS | {"running_mean", "running_var"} and set(train.values()) == {"train"}
    assert {r["check"] for r in layers["rms (keras.layers.RMSNormalization)"]} == {
        "forward",
        "grad_input",
        "grad_weight",
    }
    assert "0 failed" in err and "7 normalization layers" in err


def test_a_saved_keras_file_is_checked_like_the_model_it_was(monkeypatch, capsys, tmp_path):
    from fixtures.models.keras_models import save

    path = save(str(tmp_path / "functional.keras"))
    code, doc, _ = checked(monkeypatch, capsys, path, "--input-shape", "2,8,8,3", "--kinds", "captured,tiny_scale")
    assert code == 0, not_passing(doc)
    assert len({r["impl"] for r in doc["results"]}) == 8 and not not_passing(doc)


def test_a_subclassed_model_with_nested_layers_and_a_user_rms_norm(monkeypatch, capsys):
    code, doc, _ = checked(monkeypatch, capsys, f"{GOOD}:subclassed", "--input-shape", "2,8,8,3")
    assert code == 0, not_passing(doc)
    assert set(by_layer(doc)) == {
        "block/bn (keras.layers.BatchNormalization)",
        "block/bn (keras.layers.BatchNormalization; training=True)",
        "block/ln (keras.layers.LayerNormalization; called 2 times: checked on its first input)",
        "head_norm (keras_models.KerasRMSNorm; probed: rms, eps 1e-06)",
    }
    assert {r["shape"] for r in doc["results"] if r["impl"].startswith("block/ln") and r["input"] == "captured"} == {
        "2x8x8x8"
    }


def test_mixed_float16_layers_are_checked_in_float16(monkeypatch, capsys):
    code, doc, _ = checked(monkeypatch, capsys, f"{GOOD}:mixed_precision", "--input-shape", "2,8,8,3")
    assert code == 0, not_passing(doc)
    assert {r["dtype"] for r in doc["results"]} == {"float16"}
    assert not [r for r in doc["results"] if r["status"] in ("fail", "error")]
    skipped = [r for r in doc["results"] if r["status"] == "skip"]  # the reference overflows float16 there
    assert skipped and all("beyond float16's largest" in r["message"] for r in skipped)
    (ln_in,) = {r["impl"] for r in doc["results"] if r["impl"].startswith("ln_in ")}
    assert "its input arrives as float32, it returns float16 (its compute dtype): checked in float16" in ln_in


def test_a_frozen_batch_norm_is_checked_in_inference_only(monkeypatch, capsys):
    code, doc, _ = checked(monkeypatch, capsys, f"{GOOD}:frozen_batch_norm", "--input-shape", "2,8,8,3")
    assert code == 0, not_passing(doc)
    assert {(r["impl"], r["params"]) for r in doc["results"]} == {
        ("frozen_bn (keras.layers.BatchNormalization)", "eval")
    }


def test_rms_scaling_is_checked_as_rms_norm_and_known_for_its_variance(monkeypatch, capsys):
    code, doc, _ = checked(
        monkeypatch, capsys, f"{MODELS}/keras_cnn.py:build", "--input-shape", "2,16,16,3", "--kinds", "captured"
    )
    assert code == 0, not_passing(doc)
    rows = not_passing(doc)
    assert rows and all(r["impl"] == "head/ln (keras.layers.LayerNormalization(rms_scaling=True))" for r in rows)
    assert all(r["status"] == "known" and r["diagnosis"]["hypothesis"] == "rms_from_variance" for r in rows)


def test_a_synchronized_batch_norm_is_known_for_its_one_pass_variance(monkeypatch, capsys):
    code, doc, _ = checked(monkeypatch, capsys, f"{GOOD}:synchronized", "--input-shape", "2,8,8,4")
    assert code == 0, not_passing(doc)
    rows = not_passing(doc)
    assert rows and {r["input"] for r in rows} == {"large_mean"}
    assert all(r["status"] == "known" and r["diagnosis"]["hypothesis"] == "one_pass_variance" for r in rows)


def test_the_port_of_the_torch_cnn_passes(monkeypatch, capsys):
    require("torch")  # the port copies the PyTorch model's weights
    code, doc, _ = checked(
        monkeypatch, capsys, f"{MODELS}/keras_cnn.py:build_port", "--input-shape", "2,16,16,3", "--kinds", "captured"
    )
    assert code == 0 and not not_passing(doc)


# ---- seeded defects fail at the right layer, with the right cause ------------------------------


def test_a_user_group_norm_with_eps_outside_the_root_fails_with_that_cause(monkeypatch, capsys):
    code, doc, _ = checked(monkeypatch, capsys, f"{BUGGY}:eps_outside_group_norm", "--input-shape", "2,8,8,3")
    assert code == 1
    bad = not_passing(doc)
    assert bad and {r["impl"].split(" ")[0] for r in bad} == {"norm"}  # the batch norm before it passes
    assert all(r["status"] == "fail" for r in bad)
    assert "probed: gn, eps 1e-05, but for one known mistake: eps added outside the square root" in bad[0]["impl"]
    tiny = [r for r in bad if r["input"] == "tiny_scale"]
    assert {r["check"] for r in tiny} == {"forward", "grad_input", "grad_weight"}
    assert all(r["diagnosis"]["hypothesis"] == "eps_outside_sqrt" for r in tiny)


def test_a_one_pass_layer_norm_fails_on_large_mean_with_that_cause(monkeypatch, capsys):
    code, doc, _ = checked(monkeypatch, capsys, f"{BUGGY}:one_pass_layer_norm", "--input-shape", "2,8,8,3")
    assert code == 1
    bad = not_passing(doc)
    assert {(r["impl"], r["input"]) for r in bad} == {
        ("norm (buggy_keras.OnePassLayerNorm; probed: ln, eps 1e-05)", "large_mean")
    }
    assert all(r["status"] == "fail" and r["diagnosis"]["hypothesis"] == "one_pass_variance" for r in bad)


def test_a_layer_norm_over_the_wrong_axis_stays_unconfirmed(monkeypatch, capsys):
    code, doc, _ = checked(
        monkeypatch, capsys, f"{BUGGY}:wrong_axis_layer_norm", "--input-shape", "2,8,8,3", "--kinds", "captured"
    )
    assert code == 0  # never a failing verdict on a guess
    (row,) = not_passing(doc)
    assert row["status"] == "skip" and row["impl"] == "norm (buggy_keras.WrongAxisLayerNorm)"
    assert row["message"].startswith("unconfirmed: behaves like no normalization normcheck knows")


def test_a_layer_that_raises_is_an_error_row_naming_it(monkeypatch, capsys):
    code, doc, _ = checked(monkeypatch, capsys, f"{BUGGY}:raises_when_checked", "--input-shape", "2,6,8")
    assert code == 1
    status = {}
    for r in doc["results"]:
        status.setdefault(r["impl"].split(" ")[0], set()).add(r["status"])
    assert status == {"ln1": {"pass"}, "rms_norm": {"error"}, "ln2": {"pass"}}
    errors = [r for r in doc["results"] if r["status"] == "error"]
    assert {r["message"] for r in errors} == {"the layer raised RuntimeError: out of memory (seeded)"}


def test_a_model_that_raises_is_one_line_naming_where(monkeypatch, capsys):
    code, out, err = run_main(monkeypatch, capsys, f"{BUGGY}:raises_in_call", "--input-shape", "2,4,5,3")
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert "the model raised ValueError: cannot reshape (2, 4, 5, 3) for the head after its norm layer bn" in err
    code, out, err = run_main(monkeypatch, capsys, f"{GOOD}:functional", "--input-shape", "2,5,8,3")
    assert code == 2 and "before reaching any norm layer, on input 2x5x8x3 float32" in err


def test_dtype_is_refused_for_a_keras_model(monkeypatch, capsys):
    code, _, err = run_main(
        monkeypatch, capsys, f"{GOOD}:frozen_batch_norm", "--input-shape", "2,8,8,3", "--dtype", "float16"
    )
    assert code == 2 and "a Keras model runs in its own dtype policy" in err


# ---- the interface: runner_for, and the model left as it was --------------------------------------


def test_runner_for_runs_the_models_own_layer_in_the_reference_layout_and_restores_it():
    from fixtures.models.keras_models import BN_EPS, functional
    from normcheck.model.checks import captured_problem
    from normcheck.model.keras_checks import layer_at, runner_for
    from normcheck.model.keras_layers import inspect_keras

    model = functional()
    record = next(layer for layer in inspect_keras(model).layers if layer.path == "bn")
    bn = layer_at(model, "bn")
    before = [np.array(v.numpy()) for v in bn.weights]
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 8)).astype(np.float32).astype(np.float64)  # NHWC
    runner = runner_for(model, record, x, "float32", training=True)
    assert not isinstance(runner, str)
    assert runner.permutation == (0, 3, 1, 2) and runner.framework == "tensorflow"
    assert runner.setup.momentum == pytest.approx(0.01)  # Keras's 0.99 weighs the old value
    assert runner.setup.unbiased_running_var is False
    out = runner.run(captured_problem(runner.setup, runner.to_reference(x), 0, "bn"))
    gamma, beta, old_mean, old_var = before
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    y = (x - mean) / np.sqrt(var + BN_EPS) * gamma + beta
    np.testing.assert_allclose(runner.from_reference(out.values["forward"]), y, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out.values["running_mean"], 0.99 * old_mean + 0.01 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.values["running_var"], 0.99 * old_var + 0.01 * var, rtol=1e-5, atol=1e-6)
    after = [np.array(v.numpy()) for v in bn.weights]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))  # moving statistics restored
    inference = runner_for(model, record, x, "float32")  # the default: training=False
    assert not isinstance(inference, str) and inference.setup.params.mode == "eval"
    assert runner_for(model, record.__class__(**{**record.__dict__, "path": "nowhere"}), x, "float32") == (
        "not a layer of the model"
    )


def test_the_capture_pass_leaves_the_model_as_it_was(tmp_path):
    from fixtures.models.keras_models import subclassed
    from normcheck.model.keras_checks import check_keras

    model = subclassed()
    inv = inventory(f"{GOOD}:subclassed")
    before = [np.array(v.numpy()) for v in model.weights]
    sent: list = []
    check_keras(model, inv, ((2, 8, 8, 3),), None, ("captured",), 0, str(tmp_path), sent.append)
    assert [kind for kind, _ in sent] == ["layer"] * len(inv.layers)
    assert all(np.array_equal(a, np.array(v.numpy())) for a, v in zip(before, model.weights, strict=True))
    assert not list(tmp_path.iterdir())  # each activation deleted once its layer is checked
    from normcheck.model.keras_checks import layers_of

    assert not any("call" in vars(layer) for layer in layers_of(model).values())
