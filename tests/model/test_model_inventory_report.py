"""The inventory's renderers (normcheck/report/model_inventory.py), on hand-built records."""

from __future__ import annotations

import csv
import io
import json

from rich.console import Console

from normcheck.model.records import BUILT_IN, CANDIDATE, EVAL, NEW, OLD, Inventory, NormLayer, ParamSummary
from normcheck.report.model_inventory import counts_text, display_row, render_inventory

BN = NormLayer(
    "layer1.0.bn1",
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
    dtype="float32",
    params=(ParamSummary("weight", "layer1.0.bn1.weight", (64,), "float32", 0.5, 1.5, 1.0),),
)
KERAS = NormLayer(
    "bn",
    "bn",
    "keras.layers.BatchNormalization",
    "tensorflow",
    True,
    BUILT_IN,
    eps=1e-3,
    momentum=0.99,
    momentum_weights=OLD,
)
USER = NormLayer(
    "norm", "rms", "m.LlamaRMSNorm", "torch", False, CANDIDATE, eps=1e-6, weight=True, bias=False, notes=("a | b",)
)
INV = Inventory("net.py:build", "torch", "torch.nn.Module", "Net", (BN, KERAS, USER))


def _render(fmt: str, inv: Inventory = INV):
    return render_inventory(fmt, inv.records(), inv.summary())


def test_json_has_the_header_the_summary_and_one_object_per_layer():
    doc = json.loads(_render("json"))
    assert (doc["kind"], doc["schema"]) == ("model-inventory", 1) and "normcheck" in doc
    assert doc["summary"]["counts"] == {"bn": 2, "candidate": 1}
    assert [layer["path"] for layer in doc["layers"]] == ["layer1.0.bn1", "bn", "norm"]
    assert doc["layers"][0]["weight_max"] == 1.5


def test_csv_has_one_row_per_layer_and_a_header_when_empty():
    rows = list(csv.DictReader(io.StringIO(_render("csv"))))
    assert [r["path"] for r in rows] == ["layer1.0.bn1", "bn", "norm"]
    assert rows[0]["axes"] == "0 2 3"
    empty = _render("csv", Inventory("m.py:f", "torch", "torch.nn.Module", "Linear"))
    assert empty.splitlines()[0].startswith("path,op,kind")


def test_markdown_is_one_table_with_escaped_cells():
    text = _render("markdown")
    assert text.startswith("### Net (torch.nn.Module, torch)")
    assert "2 normalization layers (2 batch norm), 1 candidate user layer (unconfirmed)." in text
    assert "| path | kind | op |" in text and "a \\| b" in text


def test_the_table_shows_momentum_meanings_and_candidates():
    console = Console(width=250, record=True, file=io.StringIO())
    console.print(_render("table"))
    text = console.export_text()
    assert "0.1 (new)" in text and "0.99 (old) = 0.01 new" in text
    assert "candidate" in text and "rms?" in text and "axes 0,2,3; channels 1" in text


def test_display_cells_and_counts():
    row = display_row(BN.as_dict())
    assert (row["affine"], row["mode"], row["eps"]) == ("w+b", "running, eval", "1e-05")
    assert row["params"] == "w(64) 0.5…1.5 μ1"
    assert counts_text(Inventory("x", "torch", "l", "m").summary()) == "no normalization layers found"
