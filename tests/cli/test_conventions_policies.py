"""normcheck conventions --policies: the precision policies in every format conventions has, and
the one-line usage errors."""

from __future__ import annotations

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from normcheck.cli import app
from normcheck.names import POLICY_NAMES


def invoke(args):
    return CliRunner().invoke(app, ["conventions", "--policies", *args], catch_exceptions=False)


def test_table_puts_the_policies_side_by_side():
    result = invoke([])
    assert result.exit_code == 0
    for text in (*POLICY_NAMES, "cast back", "weight stored in", "offset 1 + w in", "reduction", "LlamaRMSNorm"):
        assert text in result.stdout


def test_json_has_one_record_per_policy():
    doc = json.loads(invoke(["--format", "json"]).stdout)
    assert doc["kind"] == "conventions"
    records = {r["policy"]: r for r in doc["policies"]}
    assert tuple(records) == POLICY_NAMES
    assert records["llama"]["cast back"].startswith("before the weight multiply")
    assert records["gemma"]["offset 1 + w in"] == "float32"
    assert records["fp32-weight"]["weight stored in"] == "float32"
    assert records["native"]["compute"] == "input dtype"


def test_csv_and_markdown():
    rows = list(csv.DictReader(io.StringIO(invoke(["--format", "csv"]).stdout)))
    assert [r["policy"] for r in rows] == list(POLICY_NAMES)
    markdown = invoke(["--format", "markdown", "--op", "rms"]).stdout
    assert markdown.startswith("### precision policies of RMS norm")
    assert "| property | llama | gemma | t5 | native | fp32-weight |" in markdown


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--op", "bn"], "no precision policy covers bn; the policies cover rms"),
        (["--framework", "torch"], "--policies lists the precision policies, which are no framework's"),
        (["--differences"], "--policies lists the precision policies, which are no framework's"),
    ],
)
def test_usage_errors(args, message):
    result = CliRunner().invoke(app, ["conventions", "--policies", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
