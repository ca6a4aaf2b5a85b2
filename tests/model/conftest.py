"""Fixtures of the tests of normcheck/model: model files written at test time (nothing binary is
committed)."""

from __future__ import annotations

from collections.abc import Callable

import pytest


@pytest.fixture
def onnx_file(tmp_path) -> Callable:
    """save(model_proto, name) -> the path of the .onnx file written in the test's folder."""
    import onnx

    def save(model, name: str = "model.onnx") -> str:
        path = tmp_path / name
        onnx.save(model, str(path))
        return str(path)

    return save
