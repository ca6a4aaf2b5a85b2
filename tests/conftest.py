"""Shared by every test directory: this directory is on sys.path (pytest puts a rootless
conftest's folder there), so tests import ``_require`` from anywhere; the repository root is
too, so they import the example implementations in ``fixtures/``."""

from __future__ import annotations

import os
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


@pytest.fixture
def real_workers(monkeypatch):
    """Cases run in worker processes, as in normal use."""
    monkeypatch.setenv("NORMCHECK_INLINE", "0")
