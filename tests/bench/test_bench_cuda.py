"""The CUDA path: run where a GPU is visible to torch, skipped elsewhere."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _require import require

from normcheck.bench.inputs import bench_problem
from normcheck.bench.plan import BenchRequest, prepare
from normcheck.bench.run import run
from normcheck.bench.timer import TimerSettings, measure_cuda_events
from normcheck.frameworks import bench_module
from normcheck.ops import OpParams

pytestmark = pytest.mark.gpu

QUICK = TimerSettings(min_time=0.005, max_time=0.05, warmup=0.0)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def torch():
    return require("torch")


@pytest.mark.parametrize("pass_", ["forward", "backward"])
def test_torch_target_on_cuda_is_timed_with_events_and_reports_memory(torch, pass_):
    from normcheck import frameworks

    impl = frameworks.load("torch").implementations("gn")[0]
    p = bench_problem("gn", (8, 320, 64, 64), OpParams(groups=32), "float32")
    target = bench_module("torch").build(impl, p, pass_, "eager", "cuda")
    assert target.cuda_stream and target.memory is not None
    m = measure_cuda_events(target, QUICK, "cuda")
    assert m.timer == "cuda events, L2 flushed"
    assert all(s > 0 for s in m.samples)
    target.memory.reset()
    target.sync(target.call())
    assert target.memory.peak_above() >= 0


def test_run_on_cuda_has_copy_and_dram_bandwidth(torch):
    plan = prepare(BenchRequest(frameworks="torch", ops="ln", shapes=("8192,4096",), device="cuda"))
    report = run(plan, QUICK, [0])
    assert report.env["gpu"]["name"]
    for r in report.results:
        assert r.status == "ok", r.reason
        assert r.copy_gbps > 100 and r.gbps > 0
        assert r.peak_memory is not None


@pytest.mark.parametrize("framework", ["tensorflow", "jax", "onnxruntime"])
def test_other_frameworks_on_cuda_sync_and_flush(torch, framework):
    require(framework)
    from normcheck import frameworks

    if frameworks.load(framework).device_problem("cuda"):
        pytest.skip(f"{framework} sees no GPU here")
    plan = prepare(
        BenchRequest(frameworks=framework, ops="rms", shapes=("4096,4096",), device="cuda", passes="forward")
    )
    report = run(plan, QUICK, [0])
    measured = [r for r in report.results if r.measured]
    assert measured, [r.reason for r in report.results]
    assert all("sync" in r.timer for r in measured)


def test_cli_on_cuda(torch, tmp_path):
    out = tmp_path / "cuda.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "normcheck",
            "bench",
            "--device",
            "cuda",
            "--framework",
            "torch",
            "--op",
            "gn",
            "--min-time",
            "0.01",
            "--max-time",
            "0.1",
            "--format",
            "json",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["settings"]["dram_gbps"] is None or doc["settings"]["dram_gbps"] > 0
    assert all(r["pct_copy"] > 0 for r in doc["results"] if r["status"] == "ok")
