"""A model that is not one, or whose code misbehaves, cannot crash or green ``normcheck model``:
each runs as a user runs it (a fresh process, real workers) and ends in one line on stderr and
exit 2, never a traceback, an empty inventory with exit 0, or output on stdout."""

from __future__ import annotations

import json

import pytest
from _models import MODELS, normcheck_model
from _require import require

HOSTILE = f"{MODELS}/hostile_models.py"


def _one_error_line(proc, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    assert proc.stderr.startswith("normcheck: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    "name, needles",
    [
        ("returns_a_number", ["returns_a_number() is an int, not a model"]),
        ("raises", ["raises() raised ValueError: the checkpoint is missing"]),
        ("exits", ["exits() called sys.exit(0)"]),
        ("os_exits", ["died: exit status 0"]),
        ("AbortingModel", ["died: abort (SIGABRT)", "hostile_models.py", "in __init__"]),
        ("segfaults", ["died: segmentation fault (SIGSEGV)", "in segfaults"]),
    ],
)
def test_misbehaving_model_code_is_one_line_and_exit_2(name, needles):
    require("torch")
    _one_error_line(normcheck_model(f"{HOSTILE}:{name}", "--list"), *needles)


def test_a_hang_is_stopped_at_the_timeout():
    require("torch")
    proc = normcheck_model(f"{HOSTILE}:hangs", "--list", "--timeout", "3")
    _one_error_line(proc, "took longer than 3 s (--timeout); it was stopped")


def test_missing_corrupt_and_empty_files(tmp_path):
    require("onnxruntime", "onnx")
    _one_error_line(normcheck_model(str(tmp_path / "missing.onnx")), "missing.onnx: no such file")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage that is not a protobuf \xff\xfe")
    _one_error_line(normcheck_model(str(corrupt)), "not a readable ONNX file")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    _one_error_line(normcheck_model(str(empty)), "not an ONNX model")


def test_a_torch_save_file_is_never_unpickled(tmp_path):
    torch = require("torch")
    path = tmp_path / "weights.pt"
    torch.save(torch.nn.LayerNorm(4).state_dict(), str(path))
    _one_error_line(normcheck_model(str(path)), "torch.save file", "does not unpickle")


def test_what_the_model_prints_stays_out_of_the_report():
    require("torch")
    proc = normcheck_model(f"{HOSTILE}:prints_then_builds", "--list", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # nothing but the report on stdout
    assert [layer["kind"] for layer in doc["layers"]] == ["torch.nn.LayerNorm"]
    assert "loading weights" not in proc.stderr and "a warning from the model" not in proc.stderr
