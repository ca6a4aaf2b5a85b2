from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from normcheck.cli import app


def invoke(args):
    return CliRunner().invoke(app, ["conventions", *args], catch_exceptions=False)


def test_table_shows_every_framework_and_the_differences():
    result = invoke(["--op", "bn"])
    assert result.exit_code == 0
    for text in ("batch norm (bn)", "torch", "tensorflow", "jax", "onnxruntime", "momentum", "when porting"):
        assert text in result.stdout


def test_json_records():
    doc = json.loads(invoke(["--op", "gn", "--format", "json"]).stdout)
    rows = doc["conventions"]
    eps = next(r for r in rows if r["property"] == "eps")
    assert eps["torch"] == "1e-05" and eps["tensorflow"] == "0.001" and eps["differs"] is True


def test_markdown_bolds_differences_and_escapes_pipes():
    out = invoke(["--op", "ln", "--format", "markdown"]).stdout
    assert out.startswith("### layer norm (ln)")
    assert "| **eps** | 1e-05 | 0.001 |" in out
    assert "\\|mean\\|" in out


def test_csv_and_differences_only(tmp_path):
    path = tmp_path / "c.csv"
    result = invoke(["--format", "csv", "--differences", "--output", str(path)])
    assert result.exit_code == 0 and result.stdout == ""
    import pandas as pd

    frame = pd.read_csv(path)
    assert frame["differs"].all() and set(frame["op"]) == {"bn", "ln", "in", "gn", "rms"}


def test_framework_subset():
    doc = json.loads(invoke(["--framework", "torch,jax", "--format", "json"]).stdout)
    assert "tensorflow" not in doc["conventions"][0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--op", "xx"], "unknown op 'xx'"),
        (["--format", "html"], "unknown format 'html'"),
        (["--framework", "mxnet"], "unknown framework 'mxnet'"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, message):
    result = invoke(args)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_conventions_imports_no_framework():
    code = (
        "import sys; from normcheck.cli import app; from typer.testing import CliRunner; "
        "CliRunner().invoke(app, ['conventions', '--format', 'json']); "
        "print(sorted(m for m in ('torch', 'tensorflow', 'jax', 'onnxruntime', 'keras', 'flax') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cs231n_only_when_named():
    assert "cs231n" not in invoke(["--format", "json"]).stdout
    doc = json.loads(invoke(["--framework", "torch,cs231n", "--op", "bn,rms", "--format", "json"]).stdout)
    momentum = next(r for r in doc["conventions"] if r["op"] == "bn" and r["property"] == "momentum")
    assert momentum["cs231n"] == "0.9 (weight of the old value)" and momentum["differs"]
    assert {r["cs231n"] for r in doc["conventions"] if r["op"] == "rms"} == {"—"}
