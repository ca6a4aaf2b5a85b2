"""Which loader takes an object, and the one-line errors for what is not a model (in this
process; the same through the command line and real workers is in test_isolation.py)."""

from __future__ import annotations

import pytest
from _models import inventory

from normcheck.errors import UsageError
from normcheck.model.loaders import EXPORT, KERAS_MODEL, LINEN, NNX, ONNX_MODEL, SCRIPT, TORCH, kind_of


def test_kinds_are_read_from_class_names_without_importing_frameworks():
    class Module:  # named like torch's, defined elsewhere: not a torch module
        pass

    assert kind_of(Module()) is None and kind_of(42) is None and kind_of(Module) is None


def _torch():
    return pytest.importorskip("torch")


def _flax_linen():
    return pytest.importorskip("flax.linen")


def _nnx():
    return pytest.importorskip("flax.nnx")


@pytest.mark.parametrize(
    "build, kind",
    [
        (lambda: _torch().nn.Linear(2, 2), TORCH),
        (lambda: _torch().nn.Linear, TORCH),
        (lambda: _torch().jit.script(_torch().nn.LayerNorm(2)), SCRIPT),
        (lambda: _torch().export.export(_torch().nn.LayerNorm(2), (_torch().ones(1, 2),)), EXPORT),
        (lambda: pytest.importorskip("keras").layers.Dense(2), KERAS_MODEL),
        (lambda: _flax_linen().LayerNorm(), LINEN),
        (lambda: _nnx().LayerNorm(2, rngs=_nnx().Rngs(0)), NNX),
        (lambda: pytest.importorskip("onnx").ModelProto(), ONNX_MODEL),
    ],
    ids=["torch", "torch-class", "torchscript", "export", "keras", "linen", "nnx", "onnx"],
)
def test_each_frameworks_objects(build, kind):
    assert kind_of(build()) == kind


def _spec(tmp_path, source: str, name: str) -> str:
    path = tmp_path / "net.py"
    path.write_text(source)
    return f"{path}:{name}"


@pytest.mark.parametrize(
    "source, name, message",
    [
        ("X = 42\n", "X", "X is an int, not a model"),
        ("def f():\n    return 'model'\n", "f", r"f\(\) is a str, not a model"),
        ("def f():\n    return None\n", "f", r"f\(\) is None, not a model"),
        ("class C:\n    pass\n", "C", "C is a class but not a model class"),
        ("def f():\n    raise ValueError('no weights\\nmore')\n", "f", r"^f\(\) raised ValueError: no weights$"),
        ("import sys\n\ndef f():\n    sys.exit(0)\n", "f", r"f\(\) called sys.exit\(0\)"),
        ("import sys\n\ndef f():\n    sys.exit('bye')\n", "f", r"f\(\) called sys.exit\('bye'\)"),
        ("raise RuntimeError('at import')\n", "f", "cannot import .*RuntimeError: at import"),
        ("def f():\n    return 1\n", "g", "has no attribute 'g'"),
    ],
)
def test_what_is_not_a_model_is_one_line(tmp_path, source, name, message):
    with pytest.raises(UsageError, match=message) as info:
        inventory(_spec(tmp_path, source, name))
    assert "\n" not in str(info.value)


def test_a_class_that_needs_arguments_says_so(tmp_path):
    pytest.importorskip("torch")
    spec = _spec(
        tmp_path,
        "import torch\n\nclass Net(torch.nn.Module):\n    def __init__(self, width):\n        super().__init__()\n",
        "Net",
    )
    with pytest.raises(UsageError, match=r"Net\(\) raised TypeError"):
        inventory(spec)


def test_a_model_without_norm_layers_has_an_empty_inventory(tmp_path):
    pytest.importorskip("torch")
    inv = inventory(_spec(tmp_path, "import torch\n\ndef f():\n    return torch.nn.Linear(2, 2)\n", "f"))
    assert inv.layers == () and inv.counts() == {}


def test_an_onnx_model_from_a_factory(tmp_path):
    pytest.importorskip("onnx")
    source = "from fixtures.models.onnx_graphs import fused_layer_norm as build\n"
    inv = inventory(_spec(tmp_path, source, "build"))
    assert (inv.loader, inv.layers[0].path) == ("ONNX", "ln/LayerNormalization")
