"""Every test here runs cases in real worker processes."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _real_workers(real_workers):
    return None
