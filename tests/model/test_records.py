"""The records: frozen, picklable plain data, with one flat dict per layer."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from normcheck.model.records import (
    BUILT_IN,
    CANDIDATE,
    EVAL,
    NEW,
    OLD,
    PARAM_ROLES,
    Findings,
    Inventory,
    NormLayer,
    ParamSummary,
)

WEIGHT = ParamSummary("weight", "bn.weight", (8,), "float32", 0.5, 1.5, 1.0)
BN = NormLayer(
    "bn",
    "bn",
    "torch.nn.BatchNorm2d",
    "torch",
    True,
    BUILT_IN,
    eps=1e-5,
    momentum=0.1,
    momentum_weights=NEW,
    weight=True,
    bias=True,
    running_stats=True,
    mode=EVAL,
    channel_axis=1,
    axes=(0, 2, 3),
    params=(WEIGHT,),
)
KERAS_BN = dataclasses.replace(BN, momentum=0.99, momentum_weights=OLD)
CANDIDATE_LAYER = NormLayer("norm", "rms", "m.LlamaRMSNorm", "torch", False, CANDIDATE, eps=1e-6, weight=True)


def test_momentum_in_pytorchs_meaning_whatever_the_layers():
    assert BN.new_batch_weight == pytest.approx(0.1)
    assert KERAS_BN.new_batch_weight == pytest.approx(0.01)
    assert CANDIDATE_LAYER.new_batch_weight is None


def test_as_dict_is_flat_and_has_a_column_group_per_parameter_role():
    row = BN.as_dict()
    for value in row.values():
        assert (
            value is None
            or isinstance(value, (str, int, float, bool))
            or (isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value))
        )
    assert (row["axes"], row["weight_shape"], row["weight_min"], row["bias_name"]) == ([0, 2, 3], [8], 0.5, None)
    assert {f"{role}_{k}" for role in PARAM_ROLES for k in ("name", "shape", "dtype", "min", "max", "mean")} <= set(row)
    assert row["affine"] is True and row["momentum_new_batch"] == 0.1
    assert list(row) == list(NormLayer("", None, "", "", True, "").as_dict())  # same columns for every record


def test_records_are_frozen_and_survive_pickling():
    with pytest.raises(dataclasses.FrozenInstanceError):
        BN.eps = 1.0  # type: ignore[misc]
    inv = Inventory("m.py:build", "torch", "torch.nn.Module", "Net", (BN, CANDIDATE_LAYER), notes=("n",))
    assert pickle.loads(pickle.dumps(inv)) == inv


def test_inventory_counts_and_summary():
    inv = Inventory("x.onnx", "onnxruntime", "ONNX", "p", (BN, KERAS_BN, CANDIDATE_LAYER), opsets=(("", 17),))
    assert inv.counts() == {"bn": 2, "candidate": 1}
    summary = inv.summary()
    assert (summary["layers"], summary["confirmed"], summary["candidates"], summary["opsets"]) == (
        3,
        2,
        1,
        {"ai.onnx": 17},
    )


def test_findings_keep_each_path_once():
    found = Findings()
    found.add(BN)
    found.add(KERAS_BN)
    found.note("x")
    found.note("x")
    assert found.layers == [BN] and found.notes == ["x"]


def test_a_param_summary_reads_in_one_line():
    assert WEIGHT.brief() == "weight (8,) float32 [0.5, 1.5] mean 1"
    assert ParamSummary("weight", "w", None, None, note="uninitialized").brief() == "weight ? ? (uninitialized)"
