"""verify --impl from the command line: exit codes, reports for CI, the project config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from _require import require
from typer.testing import CliRunner

torch = require("torch")

from normcheck.cli import app

ROOT = Path(__file__).resolve().parents[2]
TF = str(ROOT / "fixtures" / "torch_functional.py")
SMALL = [
    "--op",
    "gn",
    "--framework",
    "torch",
    "--shape",
    "2,6,5,5",
    "--groups",
    "3",
    "--dtype",
    "float32",
    "--input",
    "normal",
]


@pytest.fixture
def runner():
    return CliRunner()


def invoke(runner, args):
    return runner.invoke(app, ["verify", *args], catch_exceptions=False)


def test_correct_impl_exits_0(runner):
    result = invoke(runner, [*SMALL, "--impl", f"{TF}:group_norm"])
    assert result.exit_code == 0, result.output
    assert "0 failed, 0 errors" in result.stderr


def test_buggy_impl_exits_1_with_diagnosis_in_json(runner):
    result = invoke(runner, [*SMALL, "--impl", f"{TF}:group_norm_unbiased_var", "--format", "json"])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    fails = [r for r in doc["results"] if r["status"] == "fail"]
    assert fails
    assert {r["diagnosis"]["hypothesis"] for r in fails} == {"unbiased_variance"}
    assert all("->" in r["diagnosis"]["evidence"] for r in fails)
    assert all(r["diagnosis"] is None for r in doc["results"] if r["status"] == "pass")


def test_junit_report_has_a_testcase_per_check_with_failures(runner, tmp_path):
    out = tmp_path / "report.xml"
    result = invoke(
        runner,
        [
            *SMALL,
            "--impl",
            f"{TF}:group_norm_eps_outside_sqrt",
            "--input",
            "tiny_scale",
            "--format",
            "junit",
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 1
    root = ET.parse(out).getroot()
    cases = root.findall(".//testcase")
    assert int(root.get("tests")) == len(cases) > 0
    failures = root.findall(".//testcase/failure")
    assert int(root.get("failures")) == len(failures) > 0
    assert "eps added outside the square root" in failures[0].text
    assert "beyond tolerance" in failures[0].get("message")


def test_markdown_report_lists_failures_with_diagnosis(runner):
    result = invoke(runner, [*SMALL, "--impl", f"{TF}:group_norm_channels_interleaved", "--format", "markdown"])
    assert result.exit_code == 1
    text = result.stdout
    assert text.startswith("### normcheck verify: FAILED")
    assert "| op | framework | impl |" in text
    assert "**channels grouped in the wrong order" in text


def test_shards_are_disjoint_and_cover_the_matrix(runner):
    def checks(extra):
        result = invoke(
            runner,
            [*SMALL, "--input", "normal,constant,tiny_scale", "--impl", f"{TF}:group_norm", "--format", "json", *extra],
        )
        assert result.exit_code == 0, result.output
        return [(r["impl"], r["input"], r["layout"], r["check"]) for r in json.loads(result.stdout)["results"]]

    whole = checks([])
    parts = [checks(["--shard", f"{k}/3"]) for k in (1, 2, 3)]
    assert sorted(c for p in parts for c in p) == sorted(whole)
    assert all(parts) and not set(parts[0]) & set(parts[1])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--shard", "0/3"], "shard 0/3 does not exist"),
        (["--shard", "two"], "malformed shard"),
        (["--impl", "nocolon"], "malformed implementation"),
        (["--impl", f"{TF}:group_norm", "--framework", "torch,jax"], "names the one framework"),
        (["--format", "xml"], "unknown format"),
    ],
)
def test_usage_errors_exit_2(runner, args, needle):
    result = invoke(runner, ["--op", "gn", *args])
    assert result.exit_code == 2, result.output
    assert needle in result.stderr


def test_unloadable_impl_is_an_error_row_and_the_junit_file_is_written(runner, tmp_path):
    out = tmp_path / "r.xml"
    spec = str(ROOT / "fixtures" / "broken_import.py") + ":group_norm"
    result = invoke(
        runner, ["--op", "gn", "--framework", "torch", "--impl", spec, "--format", "junit", "--output", str(out)]
    )
    assert result.exit_code == 1
    errors = ET.parse(out).getroot().findall(".//testcase/error")
    assert len(errors) == 1 and "cannot import" in errors[0].get("message")


def test_no_traceback_from_a_raising_impl_in_a_real_process(tmp_path):
    spec = str(ROOT / "fixtures" / "broken_impls.py") + ":raises"
    proc = subprocess.run(
        [sys.executable, "-m", "normcheck", "verify", *SMALL, "--impl", spec, "--format", "csv"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "ValueError: weights are not initialised" in proc.stdout


PYPROJECT = f"""
[project]
name = "demo"

[tool.normcheck]
dtypes = ["float32"]
input = ["normal"]

[[tool.normcheck.check]]
name = "our group norm"
op = "gn"
impl = "{TF}:group_norm"
framework = "torch"
shapes = [[2, 6, 5, 5]]
groups = [3]

[[tool.normcheck.check]]
name = "our layer norm"
op = "ln"
impl = "{TF}:layer_norm"
framework = "torch"
shapes = [[4, 8]]
"""


def test_config_in_the_current_directory_runs_with_no_arguments(runner, tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    monkeypatch.chdir(tmp_path)
    result = invoke(runner, ["--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {r["op"] for r in doc["results"]} == {"gn", "ln"}
    assert {r["dtype"] for r in doc["results"]} == {"float32"}
    assert doc["summary"]["checks"] == ["our group norm", "our layer norm"]


def test_config_flag_and_buggy_entry_fails(runner, tmp_path):
    cfg = tmp_path / "normcheck.toml"
    cfg.write_text(
        f'dtypes = "float32"\ninput = "normal"\n[[check]]\nop = "gn"\nimpl = "{TF}:group_norm_one_pass"\n'
        'framework = "torch"\nshapes = [[2, 6, 5, 5]]\ngroups = [3]\ninput = "large_mean"\n'
    )
    result = invoke(runner, ["--config", str(cfg), "--format", "json"])
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    rows = doc["results"]
    # the check's input overrides the file's "normal"; the file's dtype is inherited
    assert {(r["op"], r["dtype"], r["input"]) for r in rows} == {("gn", "float32", "large_mean")}
    assert all(r["impl"].startswith("group_norm_one_pass") for r in rows)
    fails = [r for r in rows if r["status"] == "fail"]
    assert {r["check"] for r in fails} == {"forward", "grad_input", "grad_weight"}
    assert {r["diagnosis"]["hypothesis"] for r in fails} == {"one_pass_variance"}
    assert doc["summary"]["fail"] == len(fails)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ('[[check]]\nop = "gn"\ncolour = "red"\n', "[check][1].colour: unknown key"),
        ('[[check]]\nop = "gn"\ndtypes = 3\n', "[check][1].dtypes: expected a string or a list of strings, got int 3"),
        ('[[check]]\nop = "gn"\nshapes = [[2, -1]]\n', "[check][1].shapes: expected a list of shapes"),
        ('rtol = "small"\n[[check]]\nop = "gn"\n', "rtol: expected a number, got str 'small'"),
        ('op = "gn"\n', "lists no checks"),
        ("[[check]\n", "not valid TOML"),
        ('[[check]]\nop = "xx"\n', "unknown op 'xx'"),
    ],
)
def test_config_errors_name_file_key_and_reason(runner, tmp_path, body, needle):
    cfg = tmp_path / "normcheck.toml"
    cfg.write_text(body)
    result = invoke(runner, ["--config", str(cfg)])
    assert result.exit_code == 2, result.output
    assert str(cfg) in result.stderr or "check 1" in result.stderr
    assert needle in result.stderr


def test_config_cannot_be_combined_with_selection_flags(runner, tmp_path):
    cfg = tmp_path / "normcheck.toml"
    cfg.write_text('[[check]]\nop = "gn"\n')
    result = invoke(runner, ["--config", str(cfg), "--op", "ln"])
    assert result.exit_code == 2
    assert "--op cannot be combined with --config" in result.stderr
