"""Shared by every test directory: this directory is on sys.path (pytest puts a rootless
conftest's folder there), so tests import ``_require`` from anywhere; the repository root is
too, so they import the example implementations in ``fixtures/``."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
