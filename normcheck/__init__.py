"""normcheck: verify and profile normalization layers against float64 reference formulas."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "assert_matches", "check"]


def __getattr__(name: str) -> Any:
    # the API is imported on first use, so `normcheck --help` stays light
    if name in ("assert_matches", "check"):
        from normcheck import api

        return getattr(api, name)
    raise AttributeError(f"module 'normcheck' has no attribute {name!r}")
