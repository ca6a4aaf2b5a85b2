"""Adapter tests skip when their framework is missing, unless CI says it must be there.

NORMCHECK_REQUIRE_FRAMEWORKS names the frameworks that must run (comma list, or "all"): a
test asking for one of them that is not installed fails instead of skipping.
"""

from __future__ import annotations

import os
from types import ModuleType

import pytest

from normcheck.frameworks import FRAMEWORKS

REQUIRE_VAR = "NORMCHECK_REQUIRE_FRAMEWORKS"


def required_frameworks() -> set[str]:
    value = os.environ.get(REQUIRE_VAR, "")
    names = {n.strip() for n in value.split(",") if n.strip()}
    return set(FRAMEWORKS) if "all" in names else names


def require(framework: str, module: str | None = None) -> ModuleType:
    """Import ``module`` (default: the framework's first import name) or skip; fail when required."""
    module = module or FRAMEWORKS[framework].probe[0]
    try:
        return pytest.importorskip(module)
    except pytest.skip.Exception:
        if framework in required_frameworks():
            pytest.fail(f"{framework} is required by {REQUIRE_VAR} but {module} cannot be imported", pytrace=False)
        raise
