"""Every input is answered properly: a one-line usage error (exit 2) before anything runs, never
an internal error; 0 given on the command line is a value, not "not given"."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from normcheck.cli import app

SMALL = ["--op", "gn", "--shape", "2,6,4,4", "--groups", "3", "--dtype", "float64"]


@pytest.fixture
def runner():
    return CliRunner()


def verify(runner, *args):
    return runner.invoke(app, ["verify", *args], catch_exceptions=False)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--timeout", "inf"], "timeout must be a finite number"),
        (["--timeout", "nan"], "timeout must be a finite number"),
        (["--timeout", "0"], "timeout must be positive"),
        (["--timeout", "-1"], "timeout must be positive"),
        (["--eps", "0"], "eps must be positive, at least the smallest normal float64 (2.23e-308), and below 1"),
        (["--eps", "-1e-5"], "eps must be positive, at least the smallest normal float64"),
        (["--eps", "1e-320"], "eps must be positive, at least the smallest normal float64"),
        (["--eps", "1"], "eps must be positive, at least the smallest normal float64 (2.23e-308), and below 1"),
        (["--eps", "1e300"], "and below 1 (a stabilizer, small against the variance), got 1e+300"),
        (["--eps", "inf"], "eps must be a finite number, got inf"),
        (["--eps", "nan"], "eps must be a finite number, got nan"),
        (["--momentum", "nan"], "momentum must be a finite number"),
        (["--momentum", "1.5"], "momentum must be in [0, 1]"),
        (["--momentum", "-0.1"], "momentum must be in [0, 1] (the weight of the new batch), got -0.1"),
        (["--rtol", "nan", "--atol", "nan"], "rtol must be a finite number, got nan"),
        (["--rtol", "nan", "--atol", "0"], "rtol must be a finite number"),
        (["--rtol", "0", "--atol", "inf"], "atol must be a finite number, got inf"),
        (["--rtol", "0", "--atol", "nan"], "atol must be a finite number, got nan"),
        (["--rtol", "-1", "--atol", "0"], "rtol must be at least 0 and below 1"),
        (["--rtol", "0", "--atol", "-1"], "atol must be at least 0, got -1.0"),
        (["--atol", "-1"], "atol must be at least 0, got -1.0"),
        (["--atol", "1e-3"], "atol is given without rtol; give rtol and atol together, or neither"),
        (["--rtol", "1e-3"], "rtol is given without atol; give rtol and atol together, or neither"),
        (["--rtol", "2", "--atol", "0"], "rtol must be at least 0 and below 1"),
        (["--seed", "-1"], "seed must be a non-negative integer"),
        (["--jobs", "0"], "--jobs must be at least 1"),
        (["--shard", "9/8"], "does not exist"),
    ],
)
def test_out_of_range_numbers_are_usage_errors(runner, numpy_framework, args, needle):
    result = verify(runner, *SMALL, *args)
    assert result.exit_code == 2, result.output
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_groups_without_shape_is_a_usage_error(runner, numpy_framework):
    result = verify(runner, "--op", "gn", "--groups", "2")
    assert result.exit_code == 2
    assert "groups applies to the shapes given with shape" in result.stderr


def test_a_shape_that_cannot_fit_in_memory_is_refused_up_front_with_the_estimate(runner, numpy_framework):
    result = verify(runner, "--op", "ln", "--shape", "100000,100000,100,100", "--dtype", "float32")
    assert result.exit_code == 2
    assert "needs about" in result.stderr and "PiB" in result.stderr


def test_a_shard_with_no_cases_is_a_usage_error(runner, numpy_framework):
    result = verify(runner, *SMALL, "--input", "normal", "--shard", "500/500")
    assert result.exit_code == 2
    assert "holds no cases" in result.stderr


def test_repeated_list_options_add_up_instead_of_the_last_winning(runner, numpy_framework):
    result = verify(runner, "--op", "gn", "--op", "ln", "--dtype", "float64", "--input", "normal", "--format", "json")
    assert result.exit_code == 0, result.output
    assert {r["op"] for r in json.loads(result.stdout)["results"]} == {"gn", "ln"}


def test_zero_given_on_the_command_line_is_a_value_and_selects_flags_over_a_config(
    runner, numpy_framework, tmp_path, monkeypatch
):
    (tmp_path / "normcheck.toml").write_text('[[check]]\nop = "ln"\nframework = "numpy"\n')
    monkeypatch.chdir(tmp_path)
    result = verify(runner, *SMALL, "--input", "normal", "--rtol", "0", "--atol", "0", "--format", "json")
    doc = json.loads(result.stdout)
    assert {r["op"] for r in doc["results"]} == {"gn"}  # the flags, not the config's ln
    assert {r["rtol"] for r in doc["results"] if r["rtol"] is not None} == {0.0}
    momentum = verify(
        runner,
        "--op",
        "bn",
        "--shape",
        "4,3,2",
        "--dtype",
        "float64",
        "--input",
        "normal",
        "--momentum",
        "0",
        "--format",
        "json",
    )
    assert "momentum" in json.dumps(json.loads(momentum.stdout)["summary"]["translations"]) or momentum.exit_code == 0
    assert {r["op"] for r in json.loads(momentum.stdout)["results"]} == {"bn"}


def test_api_strict_must_be_a_bool():
    import normcheck
    from normcheck.errors import UsageError

    with pytest.raises(UsageError, match="strict must be True or False"):
        normcheck.check("gn", strict="no")


@pytest.mark.parametrize(
    "body, needle",
    [
        (
            '[[check]]\nop = "gn"\nframework = "numpy"\nrtol = nan\natol = nan\n',
            "[check][1].rtol: must be a finite number",
        ),
        ('[[check]]\nop = "gn"\nframework = "numpy"\nrtol = 0\natol = -1\n', "[check][1].atol: must be at least 0"),
        ('eps = inf\n[[check]]\nop = "gn"\nframework = "numpy"\n', "eps: must be a finite number, got inf"),
        ('[[check]]\nop = "gn"\nframework = "numpy"\neps = 1e-320\n', "[check][1].eps: must be positive, at least"),
        ('[[check]]\nop = "bn"\nframework = "numpy"\nmomentum = 1.5\n', "[check][1].momentum: must be in [0, 1]"),
        ('[[check]]\nop = "gn"\nframework = "numpy"\nrtol = 1e-3\n', "[check][1]: rtol is given without atol"),
    ],
)
def test_out_of_range_numbers_in_a_config_name_the_file_and_key(runner, numpy_framework, tmp_path, body, needle):
    path = tmp_path / "normcheck.toml"
    path.write_text(body)
    result = verify(runner, "--config", str(path))
    assert result.exit_code == 2, result.output
    assert f"{path}: {needle}" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--fail-if-slower", "nan%"], "the threshold must be a finite percentage, not negative, got 'nan%'"),
        (["--fail-if-slower", "inf%"], "the threshold must be a finite percentage, not negative, got 'inf%'"),
        (["--fail-if-slower", "-5%"], "the threshold must be a finite percentage, not negative, got '-5%'"),
        (["--min-time", "nan"], "--min-time must be a positive finite number of seconds, got nan"),
        (["--max-time", "inf"], "--max-time must be a positive finite number of seconds, got inf"),
        (["--timeout", "-1"], "--timeout must be a positive finite number of seconds, got -1"),
        (["--threads", "0"], "--threads must be at least 1"),
    ],
)
def test_bench_numbers_out_of_range_are_usage_errors(runner, args, needle):
    result = runner.invoke(app, ["bench", "--op", "ln", "--framework", "numpy", "--shape", "2,8", *args])
    assert result.exit_code == 2, result.output
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1
