from __future__ import annotations

import json
import subprocess
import sys
from io import StringIO

import pandas as pd
import pytest
from typer.testing import CliRunner

from normcheck import frameworks
from normcheck.cli import app

SMALL = ["--op", "gn", "--shape", "2,6,4,4", "--groups", "3", "--dtype", "float32,float64"]


@pytest.fixture
def runner():
    return CliRunner()


def invoke(runner, args):
    return runner.invoke(app, ["verify", *args], catch_exceptions=False)


def test_passing_run_exits_0_and_prints_a_table(runner, numpy_framework):
    result = invoke(runner, SMALL)
    assert result.exit_code == 0, result.output
    assert "group norm (gn)" in result.stdout
    assert "0 failed, 0 errors" in result.stderr


def test_json_has_one_record_per_check(runner, numpy_framework):
    result = invoke(runner, [*SMALL, "--format", "json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    results = doc["results"]
    # 2 dtypes x 5 input kinds x 4 checks (forward, grad_input, grad_weight, grad_bias)
    assert len(results) == 2 * 5 * 4
    assert doc["summary"]["pass"] == len(results)
    for key in (
        "op",
        "framework",
        "impl",
        "shape",
        "dtype",
        "input",
        "check",
        "status",
        "max_abs_err",
        "max_rel_err",
        "tolerance",
    ):
        assert key in results[0]
    assert {r["check"] for r in results} == {"forward", "grad_input", "grad_weight", "grad_bias"}
    assert results[0]["shape"] == "2x6x4x4" and results[0]["params"] == "G=3"


def test_csv_output_to_file_is_whole_and_stdout_stays_empty(runner, numpy_framework, tmp_path):
    out = tmp_path / "report.csv"
    result = invoke(runner, [*SMALL, "--format", "csv", "--output", str(out)])
    assert result.exit_code == 0
    assert result.stdout == ""
    frame = pd.read_csv(out)
    assert len(frame) == 40 and set(frame["status"]) == {"pass"}
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_wrong_implementation_fails_with_exit_1_and_the_mismatch(runner, numpy_framework):
    numpy_framework("scaled")
    result = invoke(runner, [*SMALL, "--format", "json"])
    assert result.exit_code == 1
    rows = json.loads(result.stdout)["results"]
    failed = [r for r in rows if r["status"] == "fail"]
    assert failed and all(r["check"] == "forward" for r in failed)
    assert "beyond tolerance" in failed[0]["message"] and failed[0]["max_rel_err"] == pytest.approx(0.01, rel=1e-6)


def test_failures_are_listed_in_the_table(runner, numpy_framework):
    numpy_framework("scaled")
    result = invoke(runner, SMALL)
    assert result.exit_code == 1
    assert "failures and errors" in result.stdout and "fail" in result.stdout


def test_an_implementation_that_raises_is_an_error_row_and_the_run_goes_on(runner, numpy_framework):
    numpy_framework("raises")
    result = invoke(runner, [*SMALL, "--format", "json"])
    assert result.exit_code == 1
    rows = json.loads(result.stdout)["results"]
    assert len(rows) == 10  # one error row per case, every case still planned and reported
    assert all(r["status"] == "error" and "boom" in r["message"] for r in rows)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--op", "xx"], "unknown op 'xx'; choose from bn, ln, in, gn, rms"),
        (["--framework", "caffe"], "unknown framework 'caffe'"),
        (["--dtype", "float8"], "unknown dtype 'float8'"),
        (["--input", "weird"], "unknown input kind 'weird'"),
        (["--shape", "2,x,3"], "malformed shape '2,x,3'"),
        (["--shape", "2,-1,3"], "malformed shape '2,-1,3'; every size must be a non-negative integer"),
        (["--op", "gn", "--shape", "2,6,4,4", "--groups", "4"], "C=6 is not divisible by G=4"),
        (["--op", "bn", "--shape", "2,3,4,4,4,4"], "batch norm needs a 2..5-D input"),
        (["--op", "ln", "--shape", "4,8", "--normalized-ndim", "3"], "cannot normalize 3 trailing dims"),
        (["--rtol", "1e-3"], "give rtol and atol together"),
        (["--format", "xml"], "unknown format 'xml'"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--groups", "a"], "groups must be a comma list of integers"),
        (["--profile", "fast"], "unknown profile 'fast'; choose from default, quick"),
        (["--profile", "quick", "--shape", "2,4"], "give shape or profile, not both"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(runner, numpy_framework, args, needle):
    result = invoke(runner, args)
    assert result.exit_code == 2
    assert needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_the_quick_profile_runs_only_its_cases(runner, numpy_framework):
    from normcheck.verify.quick_cases import QUICK

    result = invoke(runner, ["--op", "gn", "--profile", "quick", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["results"]
    ran = {(r["shape"], r["dtype"], r["input"]) for r in rows}
    # the stand-in framework runs float64 and float32 only
    want = {("x".join(map(str, c.shape)), c.dtype, c.kind) for c in QUICK["gn"] if c.dtype in ("float64", "float32")}
    assert ran == want


def test_a_framework_not_installed_names_the_extra(runner, monkeypatch):
    monkeypatch.setattr(frameworks, "installed", lambda: [])
    monkeypatch.setattr(frameworks, "is_installed", lambda name: False)
    result = invoke(runner, ["--framework", "torch"])
    assert result.exit_code == 2
    assert "framework 'torch' is not installed; pip install 'normcheck[torch]'" in result.stderr


def test_no_framework_installed_at_all(runner, monkeypatch):
    monkeypatch.setattr(frameworks, "installed", lambda: [])
    result = invoke(runner, [])
    assert result.exit_code == 2
    assert "no framework is installed" in result.stderr


def test_cuda_without_a_gpu_is_a_usage_error(runner):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = invoke(runner, ["--framework", "torch", "--device", "cuda", "--op", "gn"])
    assert result.exit_code == 2
    assert "--device cuda: torch sees no CUDA device" in result.stderr


def test_an_unwritable_output_is_a_usage_error(runner, numpy_framework, tmp_path):
    result = invoke(runner, [*SMALL, "--output", str(tmp_path / "missing" / "r.json"), "--format", "json"])
    assert result.exit_code == 2
    assert "does not exist" in result.stderr and "missing" in result.stderr


def test_internal_errors_are_one_line_without_traceback(monkeypatch, capsys):
    from normcheck import cli

    def explode(args):
        raise RuntimeError("unexpected state")

    monkeypatch.setattr(cli, "_run", explode)
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        "normcheck: internal error: RuntimeError: unexpected state (set NORMCHECK_DEBUG=1 for details)"
    )


FRAMEWORK_MODULES = ("torch", "tensorflow", "jax", "onnxruntime", "keras", "flax", "matplotlib", "pandas")
PROBE = """
import sys
sys.argv = ["normcheck", *{args!r}]
from normcheck.cli import main
try:
    main()
except SystemExit:
    pass
loaded = [m for m in {mods!r} if m in sys.modules]
print("LOADED", loaded, file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["verify", "--help"], ["bench", "--help"]])
def test_help_imports_no_framework(args):
    code = PROBE.format(args=args, mods=FRAMEWORK_MODULES)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "LOADED []" in proc.stderr, proc.stderr
    assert "Usage" in proc.stdout


def test_python_dash_m_runs_the_cli():
    proc = subprocess.run([sys.executable, "-m", "normcheck", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "verify" in proc.stdout


def test_table_to_file_is_plain_text(runner, numpy_framework, tmp_path):
    out = tmp_path / "report.txt"
    assert invoke(runner, [*SMALL, "--output", str(out), "--all"]).exit_code == 0
    text = out.read_text()
    assert "group norm (gn)" in text and "\x1b[" not in text
    assert StringIO(text).read().count("pass") >= 40


# -- explicit eps and momentum, --against ------------------------------------------------

BN = ["--op", "bn", "--shape", "6,3,4", "--dtype", "float64"]


def test_explicit_momentum_is_translated_and_reported(runner, numpy_framework):
    result = invoke(
        runner, [*BN, "--framework", "numpy_keras", "--momentum", "0.1", "--eps", "1e-5", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    notes = json.loads(result.stdout)["summary"]["translations"]
    assert any("momentum=0.9 (the weight of the old value) for momentum 0.1" in n for n in notes)
    assert any("eps=1e-05 given explicitly (its default is 0.001)" in n for n in notes)


def test_default_run_translates_nothing(runner, numpy_framework):
    result = invoke(runner, [*BN, "--format", "json"])
    assert json.loads(result.stdout)["summary"]["translations"] == []


def test_against_compares_directly_and_explains_the_running_variance_convention(runner, numpy_framework):
    result = invoke(runner, [*BN, "--against", "numpy_keras", "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    direct = [r for r in doc["results"] if r["against"]]
    assert direct and {r["against"] for r in direct} == {"numpy_keras:np.bn"}
    by_check = {(r["check"], r["status"]) for r in direct}
    assert ("forward", "pass") in by_check and ("running_mean", "pass") in by_check
    var_rows = [r for r in direct if r["check"] == "running_var"]
    assert {r["status"] for r in var_rows} == {"skip"}
    assert "convention difference, not a defect" in var_rows[0]["message"]
    # aligned on the baseline's defaults: Keras eps 1e-3 and momentum 0.99 given to the PyTorch-like side
    assert any("eps=0.001 given explicitly" in n for n in doc["summary"]["translations"])
    assert doc["summary"]["against"] == "numpy_keras"


def test_against_fails_a_framework_that_differs_from_the_baseline(runner, numpy_framework):
    numpy_framework("scaled")
    result = invoke(runner, [*BN, "--against", "numpy_keras", "--format", "json"])
    assert result.exit_code == 1
    rows = json.loads(result.stdout)["results"]
    failing = [r for r in rows if r["against"] and r["status"] == "fail"]
    assert {r["check"] for r in failing} == {"forward"}
    assert "against" in failing[0]["message"] and "reference" in failing[0]["message"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--eps", "0"], "eps must be positive"),
        (["--momentum", "1.5"], "momentum must be in [0, 1]"),
        (["--against", "caffe"], "unknown framework 'caffe'"),
        (["--against", "numpy,numpy_keras"], "--against takes one framework"),
    ],
)
def test_bad_eps_momentum_against_exit_2(runner, numpy_framework, args, message):
    result = invoke(runner, [*BN, *args])
    assert result.exit_code == 2
    assert message in result.stderr


# -- --repro ----------------------------------------------------------------------------------


def test_repro_into_a_folder_that_cannot_be_made_is_a_usage_error_before_the_run(runner, numpy_framework, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = invoke(runner, [*SMALL, "--repro", str(blocker / "repro")])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"normcheck: error: --repro {blocker / 'repro'}: {blocker} is not a folder"
    assert result.stdout == ""


def test_repro_lists_every_distinct_failure_and_the_summary_says_where(runner, numpy_framework, tmp_path):
    numpy_framework("scaled")
    repro = tmp_path / "repro"
    result = invoke(runner, [*SMALL, "--repro", str(repro)])
    assert result.exit_code == 1
    # the stand-in framework has no reproducer code: each distinct failure (by cause) is listed with the reason
    assert f"0 reproducer(s) in {repro}, " in result.stderr
    assert f" failure(s) without one (see {repro / 'README.md'})" in result.stderr
    index = (repro / "README.md").read_text()
    assert "Produced by: `normcheck verify --op gn --shape 2,6,4,4 --groups 3 --dtype float32,float64 --repro " in index
    assert "## Failures without a reproducer" in index and "numpy np.gn[scaled], gn forward" in index


def test_repro_of_a_passing_run_writes_an_index_that_says_so(runner, numpy_framework, tmp_path):
    result = invoke(runner, [*SMALL, "--repro", str(tmp_path / "new" / "repro")])
    assert result.exit_code == 0
    assert "; 0 reproducer(s) in" in result.stderr
    assert "The run had no failures to reproduce." in (tmp_path / "new" / "repro" / "README.md").read_text()
