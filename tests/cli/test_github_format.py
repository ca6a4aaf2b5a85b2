"""verify --format github through the CLI: chosen by itself under GitHub Actions, annotations on
stdout pointing at the user's file, the job summary appended, exit codes unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from normcheck.cli import app

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--op", "gn", "--shape", "2,6,4,4", "--groups", "3", "--dtype", "float32,float64"]
# a NumPy implementation with eps outside the square root (no framework needed)
BUGGY = [
    "--impl",
    "fixtures/cs231n_layers.py:layernorm_forward_eps_outside_sqrt",
    "--backward",
    "fixtures/cs231n_layers.py:layernorm_backward",
    "--style",
    "cs231n",
    "--op",
    "ln",
    "--shape",
    "4,6",
    "--dtype",
    "float64",
    "--input",
    "normal,tiny_scale",
]


def def_line(name: str) -> int:
    lines = (ROOT / "fixtures" / "cs231n_layers.py").read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.startswith(f"def {name}("))


@pytest.fixture
def actions(monkeypatch, tmp_path):
    """Inside a GitHub Actions job: the repository is the workspace and the current directory; the
    job summary file holds an earlier step's text. Returns that file."""
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_WORKSPACE", str(ROOT))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    return summary


@pytest.fixture
def outside_actions(monkeypatch):
    for name in ("GITHUB_ACTIONS", "GITHUB_WORKSPACE", "GITHUB_STEP_SUMMARY"):
        monkeypatch.delenv(name, raising=False)


def invoke(args):
    return CliRunner().invoke(app, ["verify", *args], catch_exceptions=False)


def annotations(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("::")]


def test_under_actions_a_failing_impl_is_annotated_at_its_def_and_exits_1(actions):
    result = invoke(BUGGY)
    assert result.exit_code == 1, result.output
    notes = annotations(result.stdout)
    line = def_line("layernorm_forward_eps_outside_sqrt")
    assert notes and all(n.startswith(f"::error file=fixtures/cs231n_layers.py,line={line},title=") for n in notes)
    assert any("eps added outside the square root" in n for n in notes)
    assert len(notes) < 10  # grouped: 10 failing checks
    last = result.stdout.splitlines()[-1]
    assert last.startswith("normcheck verify FAILED: 2 passed, 10 failed") and not last.startswith("::")
    assert "normcheck verify: 2 passed, 10 failed" in result.stderr  # the usual summary, on stderr
    text = actions.read_text()
    assert text.startswith("earlier step\n### normcheck verify: FAILED")  # appended, not overwritten


def test_a_module_spec_is_located_without_importing_it_in_the_parent(actions):
    args = [a.replace("fixtures/cs231n_layers.py", "fixtures.cs231n_layers") for a in BUGGY]
    result = invoke(args)
    assert result.exit_code == 1, result.output
    line = def_line("layernorm_forward_eps_outside_sqrt")
    assert annotations(result.stdout)[0].startswith(f"::error file=fixtures/cs231n_layers.py,line={line},")


def test_builtin_rows_have_no_file_and_a_passing_run_exits_0(actions, numpy_framework):
    result = invoke(SMALL)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "normcheck verify passed: 40 passed, 0 failed, 0 errors, 0 known defects, 0 skipped (10 cases); "
        "0 annotations for 0 checks"
    ]
    numpy_framework("scaled")
    result = invoke(SMALL)
    assert result.exit_code == 1
    notes = annotations(result.stdout)
    assert 1 <= len(notes) <= 2  # 10 failing checks: an unknown cause and, on float32, a rounding one
    assert all(n.startswith("::error title=normcheck%3A gn numpy np.gn[scaled]%3A ") for n in notes)
    assert "file=" not in result.stdout


def test_with_output_the_file_keeps_its_format_and_the_annotations_go_to_stdout(actions, tmp_path):
    out = tmp_path / "report.json"
    result = invoke([*BUGGY, "--format", "json", "--output", str(out)])
    assert result.exit_code == 1
    assert json.loads(out.read_text())["summary"]["fail"] == 10
    assert annotations(result.stdout) and "report in" in result.stderr
    assert "### normcheck verify: FAILED" in actions.read_text()


def test_with_output_and_no_format_the_file_gets_the_default_table(actions, tmp_path):
    out = tmp_path / "report.txt"
    result = invoke([*BUGGY, "--output", str(out)])
    assert result.exit_code == 1
    assert "layer norm (ln)" in out.read_text()
    assert annotations(result.stdout)


def test_an_explicit_format_to_stdout_is_left_alone(actions):
    result = invoke([*BUGGY, "--format", "json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["summary"]["fail"] == 10
    assert actions.read_text() == "earlier step\n"


def test_an_unwritable_job_summary_is_one_line_and_the_exit_code_stays(actions, monkeypatch, tmp_path):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "file" / "summary.md"))
    result = invoke(BUGGY)
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if "job summary" in line]
    assert lines == [f"normcheck verify: cannot append the job summary to {tmp_path}/file/summary.md: Not a directory"]


def test_outside_actions_the_default_stays_the_table(outside_actions, numpy_framework):
    result = invoke(SMALL)
    assert result.exit_code == 0 and "group norm (gn)" in result.stdout and not annotations(result.stdout)


def test_format_github_outside_actions_prints_annotations_and_writes_no_summary(outside_actions, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = invoke([*BUGGY, "--format", "github"])
    assert result.exit_code == 1 and annotations(result.stdout)


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--format", "githup"], "unknown format 'githup'"), (["--op", "nope"], "nope")],
)
def test_usage_errors_under_actions_exit_2_with_one_line(actions, numpy_framework, args, needle):
    result = invoke(args)
    assert result.exit_code == 2
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1 and needle in result.stderr
    assert actions.read_text() == "earlier step\n"


def test_bench_under_actions_annotates_a_regression_and_appends_its_summary(tmp_path):
    """bench in a subprocess, as a user runs it: with the report in a file, annotations on stdout."""
    import os
    import subprocess
    import sys

    quick = ["--framework", "numpy", "--op", "rms", "--shape", "8,64", "--min-time", "0.005", "--max-time", "0.03"]
    summary = tmp_path / "step_summary.md"
    env = {**os.environ, "GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    env.pop("GITHUB_WORKSPACE", None)

    def bench(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "normcheck", "bench", *quick, *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=ROOT, env=env)

    old = tmp_path / "old.json"
    first = bench("--format", "json", "--output", str(old))
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[-1].startswith("normcheck bench ran: 2 measured")
    doc = json.loads(old.read_text())
    for r in doc["results"]:
        r["samples_s"] = [s * 0.2 for s in r["samples_s"]]  # the next run is 5x slower than this
    old.write_text(json.dumps(doc))
    second = bench("--compare", str(old), "--format", "json", "--output", str(tmp_path / "new.json"))
    assert second.returncode == 1, second.stderr
    notes = annotations(second.stdout)
    assert notes and notes[0].startswith("::error title=normcheck bench%3A rms numpy ") and "slower" in notes[0]
    assert summary.read_text().count("## normcheck bench") == 2
