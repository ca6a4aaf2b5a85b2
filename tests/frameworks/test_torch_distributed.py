"""Distributed batch norm (``--world-size``): the user's and torch's SyncBatchNorm run in 2 and 3
rank processes on localhost (gloo), judged against the reference on the global batch; crashing
and hanging ranks are error rows, and no rank process outlives the run."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from _require import require

require("torch")

from typer.testing import CliRunner

from normcheck.cli import app
from normcheck.errors import UsageError
from normcheck.verify.config import load_config
from normcheck.verify.distributed import parse_world_sizes, split_batch
from normcheck.verify.records import ERROR, FAIL, PASS, SKIP
from normcheck.verify.request import Request, validate

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "torch_distributed.py"
SMALL = {"ops": "bn", "shapes": ["6,3,4"], "kinds": "normal"}


@pytest.fixture(autouse=True)
def _tagged(monkeypatch):
    """A tag in the environment every rank this test starts inherits, so ``_rank_processes``
    sees this test's ranks only (another xdist worker may be running its own), orphans too."""
    monkeypatch.setenv("NORMCHECK_TEST_TAG", f"{os.getpid()}-{time.monotonic_ns()}")


def _rank_processes() -> list[int]:
    """Live processes started as normcheck's ranks by this test (RANK_MARK on the command line,
    this test's tag in the environment)."""
    from normcheck.frameworks.torch.distributed import RANK_MARK

    tag = f"NORMCHECK_TEST_TAG={os.environ['NORMCHECK_TEST_TAG']}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().split()[2]
        except OSError:
            continue
        if RANK_MARK.encode() in cmdline.split(b"\0") and tag in environ.split(b"\0") and state != "Z":
            pids.append(int(entry))
    return pids


def _check(impl: str | None, world: str, dtypes: str = "float64", timeout: float = 60, **kw):
    from normcheck.api import check

    return check(
        "bn",
        None if impl is None else f"{FIXTURES}:{impl}",
        world_size=world,
        dtypes=dtypes,
        timeout=timeout,
        **{k: v for k, v in {**SMALL, **kw}.items() if k != "ops"},
    )


# -- parsing and planning, no process started ---------------------------------------------


def test_world_sizes_parse_and_refuse():
    assert parse_world_sizes("2,3") == (2, 3)
    assert parse_world_sizes(3) == (3,)
    assert parse_world_sizes([2, 2, 4]) == (2, 4)
    for bad in ("1", "2,x", "", 0, True):
        with pytest.raises(UsageError, match="at least 2"):
            parse_world_sizes(bad)


@pytest.mark.parametrize("n,world", [(2, 2), (6, 2), (6, 3), (9, 2), (16, 3), (5, 5), (64, 4)])
def test_split_is_whole_and_unequal_where_possible(n, world):
    sizes = split_batch(n, world)
    assert sum(sizes) == n and len(sizes) == world and min(sizes) >= 1
    if n >= world * (world + 1) // 2 + world:
        assert len(set(sizes)) > 1


@pytest.mark.parametrize(
    "request_, message",
    [
        (Request(ops="bn,ln", world_size="2"), "give --op bn"),
        (Request(world_size="2"), "give --op bn"),
        (Request(ops="bn", frameworks="tensorflow", world_size="2"), "only with framework torch"),
        (Request(ops="bn", world_size="1"), "at least 2"),
        (Request(ops="bn", against="torch", world_size="2"), "cannot be combined with --world-size"),
    ],
)
def test_usage_errors(request_, message):
    with pytest.raises(UsageError, match=message):
        validate(request_)


def test_cli_refuses_with_one_line_and_exit_2():
    result = CliRunner().invoke(app, ["verify", "--op", "ln", "--world-size", "2"])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "--op bn" in result.stderr


def test_config_key(tmp_path):
    config = tmp_path / "normcheck.toml"
    config.write_text('[[check]]\nop = "bn"\nworld_size = [2, 3]\n')
    (request,) = load_config(config)
    assert parse_world_sizes(request.world_size) == (2, 3)


# -- real rank processes --------------------------------------------------------------------


def test_correct_implementation_passes_in_2_and_3_processes():
    report = _check("BatchNorm", "2,3", dtypes="float64,float32")
    impls = {r.case.impl for r in report.results}
    assert impls == {"BatchNorm (world 2)", "BatchNorm (world 3)"}
    assert report.ok and {r.status for r in report.results} == {PASS}
    checks = {r.check for r in report.results}
    assert {"forward", "grad_input", "grad_weight", "grad_bias", "running_mean", "running_var"} <= checks
    assert not _rank_processes()


def test_per_rank_statistics_fail_and_are_named():
    report = _check("PerRankBatchNorm", "2")
    failing = [r for r in report.results if r.status == FAIL]
    assert not report.ok
    assert {"forward", "grad_input", "grad_weight", "running_mean", "running_var"} <= {r.check for r in failing}
    causes = {r.diagnosis.hypothesis for r in failing if r.diagnosis is not None}
    assert causes == {"per_rank_statistics"}
    assert all("2 ranks" in r.diagnosis.cause for r in failing if r.diagnosis is not None)


def test_sync_batch_norm_on_cpu():
    """torch 2.13's nn.SyncBatchNorm refuses CPU tensors (its kernels are CUDA-only): a skip with
    the reason, never a pass; should a later torch run it on CPU, it must pass."""
    from normcheck.frameworks.torch.distributed import sync_batch_norm_cpu_problem

    report = _check(None, "2")
    assert {r.case.impl for r in report.results} == {"nn.SyncBatchNorm (world 2)"}
    if sync_batch_norm_cpu_problem() is None:
        assert report.ok and {r.status for r in report.results} == {PASS}
    else:
        assert {r.status for r in report.results} == {SKIP}
        assert all("--device cuda" in r.message for r in report.results)


def test_crashing_rank_is_an_error_row():
    """Ranks are processes of their own even when normcheck runs inline (as here)."""
    report = _check("CrashingRank", "2", timeout=40)
    assert not report.ok and {r.status for r in report.results} == {ERROR}
    assert any("rank 1 exit status 3" in r.message for r in report.results)
    assert not _rank_processes()


def test_hanging_rank_is_an_error_row_and_nothing_leaks(real_workers):
    report = _check("HangingRank", "2", timeout=6, shapes=["4,2"])
    assert not report.ok and {r.status for r in report.results} == {ERROR}
    assert all("did not answer" in r.message or "timed out" in r.message for r in report.results)
    assert not _rank_processes()
