"""Shared by every test directory: this directory is on sys.path (pytest puts a rootless
conftest's folder there), so tests import ``_require`` from anywhere; the repository root is
too, so they import the example implementations in ``fixtures/``."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# Most tests check what normcheck computes, not how it survives the code it runs: they run the
# engine's handlers in the test process (NORMCHECK_INLINE=1, also inherited by the normcheck
# subprocesses they start), which keeps the suite as fast as one process. Tests of isolation use
# the ``real_workers`` fixture (tests/engine does for all of its tests).
os.environ.setdefault("NORMCHECK_INLINE", "1")

# A CI runner may start the suite with SIGINT ignored (a background job of a shell without job
# control inherits it ignored, and so does every process it starts): the Ctrl-C tests need it
# delivered, here and in the processes they start (exec resets a handled signal to its default).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _not_in_github_actions(monkeypatch):
    """The suite may itself run in GitHub Actions, where normcheck's default format is github
    and it appends a job summary: each test sees a plain environment unless it sets one."""
    for name in ("GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "GITHUB_WORKSPACE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def real_workers(monkeypatch):
    """Cases run in worker processes, as in normal use."""
    monkeypatch.setenv("NORMCHECK_INLINE", "0")


def cuda_available() -> bool:
    """Whether torch sees a CUDA device: the one test of where ``gpu`` tests run."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config, items):
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if gpu and not cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA device (torch sees none)")
        for item in gpu:
            item.add_marker(skip)
