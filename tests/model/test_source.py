"""A model SPEC or file, resolved in the parent without importing anything."""

from __future__ import annotations

import pytest
from _models import MODELS

from normcheck.errors import UsageError
from normcheck.model.source import KERAS, ONNX, TORCH_EXPORT, TORCHSCRIPT, resolve_source


@pytest.mark.parametrize(
    "suffix, loader", [(".onnx", ONNX), (".pt", TORCHSCRIPT), (".pt2", TORCH_EXPORT), (".keras", KERAS)]
)
def test_a_model_file_goes_by_its_suffix(tmp_path, suffix, loader):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"")
    source = resolve_source(str(path))
    assert (source.path, source.loader, source.spec) == (str(path.resolve()), loader, None)


def test_a_spec_names_a_file_or_a_module():
    source = resolve_source(f"{MODELS}/torch_cnn.py:build")
    assert source.spec is not None and source.spec.attr == "build" and source.path is None
    assert resolve_source("some.package.module:build").spec.target == "some.package.module"


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "no model given"),
        ("missing.onnx", "missing.onnx: no such file"),
        (f"{MODELS}/torch_cnn.py", "name the model"),
        (f"{MODELS}/nosuch.py:build", "no such file"),
        ("pkg.module", "is neither a model file"),
        ("a.py:not-a-name", "malformed model"),
    ],
)
def test_what_cannot_name_a_model_is_one_usage_error(text, message):
    with pytest.raises(UsageError, match=message):
        resolve_source(text)


def test_a_folder_or_an_unknown_file_kind_is_refused(tmp_path):
    with pytest.raises(UsageError, match="is a folder"):
        resolve_source(str(tmp_path))
    odd = tmp_path / "weights.bin"
    odd.write_bytes(b"x")
    with pytest.raises(UsageError, match=r"unknown kind of model file '\.bin'"):
        resolve_source(str(odd))
