"""NORMCHECK_REQUIRE_FRAMEWORKS turns a missing framework's skip into a failure."""

from __future__ import annotations

import pytest
from _require import REQUIRE_VAR, require, required_frameworks


def _missing(monkeypatch):
    def importorskip(name, *args, **kwargs):
        raise pytest.skip.Exception(f"could not import {name!r}")

    monkeypatch.setattr(pytest, "importorskip", importorskip)


def test_missing_framework_skips_when_not_required(monkeypatch):
    monkeypatch.delenv(REQUIRE_VAR, raising=False)
    _missing(monkeypatch)
    with pytest.raises(pytest.skip.Exception):
        require("jax")


def test_missing_framework_fails_when_required(monkeypatch):
    monkeypatch.setenv(REQUIRE_VAR, "torch,jax")
    _missing(monkeypatch)
    with pytest.raises(pytest.fail.Exception, match="jax is required by NORMCHECK_REQUIRE_FRAMEWORKS"):
        require("jax")


def test_all_means_every_registered_framework(monkeypatch):
    monkeypatch.setenv(REQUIRE_VAR, "all")
    assert required_frameworks() == {"torch", "tensorflow", "jax", "onnxruntime"}
    monkeypatch.setenv(REQUIRE_VAR, " torch , onnxruntime ")
    assert required_frameworks() == {"torch", "onnxruntime"}
