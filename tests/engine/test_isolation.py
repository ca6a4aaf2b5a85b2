"""User code that misbehaves cannot turn a run green, crash it, hang it or lose its report.

Each test runs ``normcheck verify`` in a subprocess as a user does, on a fixture of
fixtures/hostile.py (or a sibling) that exits, crashes, hangs, prints or changes the process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _require import require

ROOT = Path(__file__).resolve().parents[2]
SMALL = [
    "--framework",
    "torch",
    "--op",
    "gn",
    "--shape",
    "2,4,3,3",
    "--groups",
    "2",
    "--dtype",
    "float32",
    "--input",
    "normal",
]


def verify(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "normcheck", "verify", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def hostile(name: str) -> str:
    return f"{ROOT}/fixtures/hostile.py:group_norm_{name}"


@pytest.fixture(autouse=True)
def _torch():
    require("torch")


@pytest.mark.parametrize(
    "name, needle",
    [
        ("sys_exit", "called sys.exit(0)"),
        ("os_exit", "the worker died: exit status 0"),
        ("segfault", "segmentation fault (SIGSEGV)"),
        ("keyboard_interrupt", "raised KeyboardInterrupt"),
        ("base_exception", "raised Abort: giving up"),
    ],
)
@pytest.mark.slow
def test_code_that_ends_its_process_is_an_error_row_and_the_run_fails(name, needle):
    proc = verify("--impl", hostile(name), *SMALL, "--format", "json")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    rows = doc["results"]
    assert rows and all(r["status"] == "error" and needle in r["message"] for r in rows), rows[0]["message"]
    assert doc["summary"]["cases"] == len(rows)
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_segfault_names_the_line_of_the_code_that_crashed():
    proc = verify("--impl", hostile("segfault"), *SMALL, "--format", "json")
    message = json.loads(proc.stdout)["results"][0]["message"]
    assert "fixtures/hostile.py:" in message and "in group_norm_segfault" in message


@pytest.mark.parametrize("name", ["hangs_catching_everything", "hangs_owning_sigalrm"])
@pytest.mark.slow
def test_a_hang_is_stopped_at_the_timeout_and_the_rest_of_that_implementation_is_not_run(name):
    start = time.monotonic()
    proc = verify(
        "--impl", hostile(name), *SMALL[:-1], "normal,constant", "--timeout", "2", "--jobs", "1", "--format", "json"
    )
    assert proc.returncode == 1, proc.stderr
    rows = json.loads(proc.stdout)["results"]
    for impl in {r["impl"] for r in rows}:  # the explicit-arguments and the defaults call styles
        messages = [r["message"] for r in rows if r["impl"] == impl]
        assert len(messages) == 4 and sum("timed out after 2 s" in m for m in messages) == 2, messages
        assert sum("not run: 2 earlier cases" in m for m in messages) == 2
    assert time.monotonic() - start < 90


def test_a_thread_left_running_does_not_hold_the_run_open():
    proc = verify("--impl", hostile("leaves_a_thread"), *SMALL, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_prints_never_reach_the_report_on_stdout():
    proc = verify("--impl", hostile("prints"), *SMALL, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["summary"]["pass"] > 0  # the whole of stdout is the report
    assert "not normcheck" not in proc.stderr and "descriptor 1" not in proc.stderr


def test_prints_reach_stderr_with_verbose():
    proc = verify("--impl", hostile("prints"), *SMALL, "--format", "json", "--verbose")
    assert json.loads(proc.stdout)["summary"]["pass"] > 0
    assert "not normcheck" in proc.stderr


def test_chdir_in_the_code_does_not_move_a_relative_output(tmp_path):
    proc = verify("--impl", hostile("chdir"), *SMALL, "--format", "json", "--output", "report.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "report.json").read_text())["summary"]["pass"] > 0


def test_a_module_beside_the_implementation_does_not_shadow_normcheck_imports():
    proc = verify(
        "--impl", f"{ROOT}/fixtures/shadowing/group_norm_beside_pandas.py:group_norm", *SMALL, "--format", "csv"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("op,framework")


def test_an_exit_while_importing_the_code_is_an_error_row():
    proc = verify(
        "--impl",
        f"{ROOT}/fixtures/exits_at_import.py:group_norm",
        *SMALL,
        "--format",
        "json",
        env={"EXIT_AT_IMPORT": "1"},
    )
    assert proc.returncode == 1, proc.stderr
    rows = json.loads(proc.stdout)["results"]
    assert len(rows) == 1 and rows[0]["status"] == "error" and "SystemExit" in rows[0]["message"]


def test_an_atexit_hook_that_exits_0_cannot_turn_a_failing_run_green():
    proc = verify("--impl", f"{ROOT}/fixtures/exits_at_import.py:group_norm_wrong", *SMALL, "--format", "json")
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["summary"]["fail"] > 0


@pytest.mark.slow
def test_keras_backend_in_the_environment_does_not_break_the_tensorflow_adapter():
    require("tensorflow")
    proc = verify(
        "--framework",
        "tensorflow",
        "--op",
        "ln",
        "--shape",
        "2,8",
        "--dtype",
        "float32",
        "--input",
        "normal",
        env={"KERAS_BACKEND": "jax", "COLUMNS": "40"},
    )
    assert proc.returncode == 0, proc.stderr
    # no TensorFlow, oneDNN or absl log line: stderr is the summary alone, unwrapped at 40 columns
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.slow
def test_ctrl_c_writes_the_finished_cases_marked_interrupted_and_exits_130(tmp_path):
    report = tmp_path / "partial.json"
    args = [
        "--impl",
        hostile("hangs_on_float32"),
        "--framework",
        "torch",
        "--op",
        "gn",
        "--shape",
        "2,4,3,3",
        "--groups",
        "2",
        "--dtype",
        "float64,float32",
        "--input",
        "normal",
        "--jobs",
        "1",
        "--format",
        "json",
        "--output",
        str(report),
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "normcheck", "verify", *args],
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(8)  # the float64 cases finish in the first seconds; float32 hangs
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    doc = json.loads(report.read_text())
    assert doc["summary"]["interrupted"] is True
    assert {r["dtype"] for r in doc["results"]} == {"float64"} and doc["summary"]["pass"] > 0
    assert "interrupted" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_jobs_do_not_change_the_records():
    def records(jobs: str) -> list[dict]:
        proc = verify(
            "--framework", "torch", "--op", "gn,ln", "--dtype", "float32,float16", "--jobs", jobs, "--format", "json"
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)["results"]

    one, three = records("1"), records("3")
    assert len(one) > 1000 and one == three
