"""normcheck bench end to end, in a subprocess as a user runs it (it pins the process's CPUs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from _require import require

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["--min-time", "0.005", "--max-time", "0.03"]
SMALL = ["--op", "ln,gn", "--shape", "4,32,4,4", *QUICK]


def bench(*args: str, timeout: float = 240, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "normcheck", "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def bench_in_workers(*args: str) -> subprocess.CompletedProcess:
    """``bench`` as in normal use, timing in a worker process (the suite runs inline by default)."""
    return bench(*args, env={"NORMCHECK_INLINE": "0"})


@pytest.fixture(scope="module")
def numpy_run(tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("bench") / "run.json"
    proc = bench("--framework", "numpy", *SMALL, "--format", "json", "--output", str(path))
    assert proc.returncode == 0, proc.stderr
    return path, json.loads(path.read_text())


def test_json_has_environment_settings_and_raw_samples(numpy_run):
    _, doc = numpy_run
    assert doc["kind"] == "bench"
    assert doc["env"]["threads"] == 1 and doc["env"]["cpu"] and doc["env"]["versions"]["numpy"]
    assert doc["settings"]["copy_bandwidth"]["gbps"] > 0
    rows = doc["results"]
    assert [(r["op"], r["pass"]) for r in rows] == [
        ("ln", "forward"),
        ("ln", "backward"),
        ("gn", "forward"),
        ("gn", "backward"),
    ]
    for r in rows:
        assert r["status"] == "ok"
        assert len(r["samples_s"]) == r["n_samples"] >= 2
        assert r["p20_s"] <= r["median_s"] <= r["p80_s"]
        assert r["gbps"] > 0 and r["pct_copy"] > 0


@pytest.mark.slow
def test_csv_and_table_and_markdown():
    proc = bench("--framework", "numpy", "--op", "rms", "--shape", "8,64", *QUICK, "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    from io import StringIO

    df = pd.read_csv(StringIO(proc.stdout))
    assert set(df["pass"]) == {"forward", "backward"} and (df["median_s"] > 0).all()
    table = bench("--framework", "numpy", "--op", "rms", "--shape", "8,64", *QUICK)
    assert "RMS norm (rms)" in table.stdout and "copy bandwidth" in table.stdout
    assert "2 measured" in table.stderr
    md = bench("--framework", "numpy", "--op", "rms", "--shape", "8,64", *QUICK, "--format", "markdown")
    assert md.stdout.startswith("## normcheck bench") and "| rms |" in md.stdout


def _scaled(doc: dict, factor: float, path: Path) -> Path:
    old = json.loads(json.dumps(doc))
    for r in old["results"]:
        r["samples_s"] = [s * factor for s in r["samples_s"]]
    path.write_text(json.dumps(old))
    return path


def test_compare_fails_on_a_slowdown_and_lists_the_cases(numpy_run, tmp_path):
    _, doc = numpy_run
    faster_before = _scaled(doc, 0.2, tmp_path / "old.json")  # the new run is 5x slower than this
    proc = bench("--framework", "numpy", *SMALL, "--compare", str(faster_before), "--fail-if-slower", "10%")
    assert proc.returncode == 1, proc.stderr
    assert "slower than before by more than 10%" in proc.stdout
    assert "4 case(s) slower" in proc.stderr


def test_compare_passes_when_nothing_got_slower(numpy_run, tmp_path):
    _, doc = numpy_run
    slower_before = _scaled(doc, 5.0, tmp_path / "old.json")
    proc = bench("--framework", "numpy", *SMALL, "--compare", str(slower_before), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["compare"]["slower"] == []


@pytest.mark.slow
def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "bench.png"
    proc = bench("--framework", "numpy", *SMALL, "--plot", str(png))
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "xml"], "unknown format"),
        (["--plot", "out.pdf"], "--plot takes a .png or .svg"),
        (["--fail-if-slower", "lots"], "malformed threshold"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["--pass", "sideways"], "unknown pass"),
        (["--compare", "missing.json"], "--compare missing.json: cannot read it"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    proc = bench("--framework", "numpy", *args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cuda_without_a_gpu_exits_2_naming_each_framework():
    torch = require("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = bench("--device", "cuda", "--framework", "torch,numpy", "--op", "gn")
    assert proc.returncode == 2
    assert "torch sees no CUDA device" in proc.stderr and "numpy runs on the CPU only" in proc.stderr


def test_out_of_memory_marks_the_row_and_the_run_goes_on():
    require("torch")
    proc = bench(
        "--impl",
        "fixtures/bench_impls.py:group_norm_oom_when_large",
        "--framework",
        "torch",
        "--shape",
        "4,64,32,32",
        "--shape",
        "1,32,8,8",
        "--pass",
        "forward",
        *QUICK,
        "--format",
        "json",
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["results"]
    status = {(r["impl"], r["shape"]): r["status"] for r in rows}
    assert status[("group_norm_oom_when_large", "4x64x32x32")] == "oom"
    assert status[("group_norm_oom_when_large", "1x32x8x8")] == "ok"
    assert status[("F.group_norm", "4x64x32x32")] == "ok"  # cases after the failure still ran


def test_ctrl_c_reports_what_was_measured_and_exits_130():
    require("torch")
    proc = bench_in_workers(
        "--impl",
        "fixtures/bench_impls.py:group_norm_interrupted_when_large",
        "--framework",
        "torch",
        "--shape",
        "1,32,8,8",
        "--shape",
        "4,64,32,32",
        "--pass",
        "forward",
        *QUICK,
        "--format",
        "json",
    )
    assert proc.returncode == 130, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["interrupted"] is True
    assert [r["shape"] for r in doc["results"]] == ["1x32x8x8"] * 3
    assert "interrupted" in proc.stderr


def test_keyboard_interrupt_raised_by_the_code_is_an_error_row_not_a_ctrl_c():
    require("torch")
    proc = bench_in_workers(
        "--impl",
        "fixtures/hostile.py:group_norm_keyboard_interrupt",
        "--framework",
        "torch",
        "--shape",
        "1,32,8,8",
        "--pass",
        "forward",
        *QUICK,
        "--format",
        "json",
    )
    assert proc.returncode == 1, proc.stderr
    rows = {r["impl"]: r for r in json.loads(proc.stdout)["results"]}
    assert rows["group_norm_keyboard_interrupt"]["status"] == "error"
    assert "KeyboardInterrupt" in rows["group_norm_keyboard_interrupt"]["reason"]
    assert rows["F.group_norm"]["status"] == "ok"


@pytest.mark.parametrize(
    "name, needle",
    [
        ("group_norm_segfault", "SIGSEGV"),
        ("group_norm_os_exit", "exit status 0"),
        ("group_norm_returns_none", "returned None"),
    ],
)
@pytest.mark.slow
def test_a_row_that_kills_its_worker_or_returns_nothing_is_an_error_and_the_run_goes_on(name, needle):
    require("torch")
    proc = bench_in_workers(
        "--impl",
        f"fixtures/hostile.py:{name}",
        "--op",
        "gn",
        "--framework",
        "torch",
        "--shape",
        "1,32,8,8",
        "--shape",
        "2,32,8,8",
        "--pass",
        "forward",
        *QUICK,
        "--format",
        "json",
    )
    assert proc.returncode == 1, proc.stderr
    rows = json.loads(proc.stdout)["results"]
    mine = [r for r in rows if r["impl"] == name]
    assert len(mine) == 2 and all(r["status"] == "error" and needle in r["reason"] for r in mine), mine
    assert [r["status"] for r in rows if r["impl"] == "F.group_norm"] == ["ok", "ok"]


@pytest.mark.slow
def test_bench_timeout_stops_a_hung_row():
    require("torch")
    proc = bench_in_workers(
        "--impl",
        "fixtures/hostile.py:group_norm_hangs_catching_everything",
        "--framework",
        "torch",
        "--shape",
        "1,32,8,8",
        "--pass",
        "forward",
        "--timeout",
        "3",
        *QUICK,
        "--format",
        "json",
    )
    assert proc.returncode == 1, proc.stderr
    rows = {r["impl"]: r for r in json.loads(proc.stdout)["results"]}
    assert rows["group_norm_hangs_catching_everything"]["status"] == "error"
    assert "timed out after 3 s" in rows["group_norm_hangs_catching_everything"]["reason"]
    assert rows["F.group_norm"]["status"] == "ok"


def test_user_implementation_is_timed_beside_the_builtins():
    require("torch")
    proc = bench(
        "--impl",
        "fixtures/torch_functional.py:group_norm",
        "--framework",
        "torch",
        "--shape",
        "2,32,8,8",
        "--pass",
        "backward",
        *QUICK,
        "--format",
        "json",
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["results"]
    user = [r for r in rows if r["framework"] == "user"]
    assert len(user) == 1 and user[0]["status"] == "ok" and user[0]["speedup_vs_baseline"] > 0
