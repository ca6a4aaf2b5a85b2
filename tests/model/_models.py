"""Helpers of the tests of normcheck/model: an in-process inventory of a SPEC or a model file, and
the command line as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "fixtures" / "models"


def inventory(text: str):
    """The Inventory of a SPEC or a model file, loaded and inspected in this process (the
    isolation is tested through the command line, in test_isolation.py)."""
    from normcheck.model.loaders import inspect_model, load_model
    from normcheck.model.source import resolve_source

    return inspect_model(load_model(resolve_source(text)), text)


def by_path(inv) -> dict:
    return {layer.path: layer for layer in inv.layers}


def normcheck_model(*args: str, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -m normcheck model ARGS`` in a fresh process, in real worker processes."""
    return subprocess.run(
        [sys.executable, "-m", "normcheck", "model", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env={**os.environ, "NORMCHECK_INLINE": "0", **(env or {})},
    )
