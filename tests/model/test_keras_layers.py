"""The inventory of Keras 3 models: built by a factory, or loaded from a .keras file."""

from __future__ import annotations

import pytest
from _require import require

keras = require("tensorflow", "keras")

from _models import MODELS, by_path, inventory

from normcheck.model.records import CANDIDATE, FROZEN, OLD, PER_CALL

CNN = f"{MODELS}/keras_cnn.py"


def _check_cnn(inv) -> None:
    assert (inv.framework, inv.loader) == ("tensorflow", "Keras")
    layers = by_path(inv)
    assert list(layers) == ["bn1", "gn2", "head/ln"]
    bn, gn, ln = layers["bn1"], layers["gn2"], layers["head/ln"]
    assert (bn.kind, bn.op, bn.eps, bn.momentum, bn.momentum_weights, bn.new_batch_weight) == (
        "keras.layers.BatchNormalization",
        "bn",
        1e-4,
        pytest.approx(0.8),
        OLD,
        pytest.approx(0.2),
    )
    assert (bn.mode, bn.running_stats, bn.channel_axis, bn.feature_shape, bn.dtype) == (
        PER_CALL,
        True,
        -1,
        (8,),
        "float32",
    )
    assert [(p.role, p.name) for p in bn.params] == [
        ("weight", "bn1/gamma"),
        ("bias", "bn1/beta"),
        ("running_mean", "bn1/moving_mean"),
        ("running_var", "bn1/moving_variance"),
    ]
    assert (gn.kind, gn.groups, gn.eps, gn.channel_axis) == ("keras.layers.GroupNormalization", 4, 1e-6, -1)
    assert (ln.kind, ln.op, ln.eps, ln.axes, ln.weight, ln.bias) == (
        "keras.layers.LayerNormalization(rms_scaling=True)",
        "rms",
        1e-5,
        (-1,),
        True,
        False,
    )
    assert any("Var[x]" in note for note in ln.notes)


def test_the_keras_cnn_factory():
    _check_cnn(inventory(f"{CNN}:build"))


def test_the_same_model_saved_and_loaded_has_the_same_inventory(tmp_path):
    from fixtures.models.keras_cnn import save

    path = save(str(tmp_path / "cnn.keras"))
    built, loaded = inventory(f"{CNN}:build"), inventory(path)
    _check_cnn(loaded)
    assert [layer.as_dict() for layer in loaded.layers] == [layer.as_dict() for layer in built.layers]


def test_groups_minus_one_frozen_batch_norm_rms_normalization_and_what_is_skipped(tmp_path):
    path = tmp_path / "net.py"
    path.write_text(
        """
import keras

class PixelNorm(keras.layers.Layer):
    def __init__(self, epsilon=1e-8, **kw):
        super().__init__(**kw)
        self.epsilon = epsilon

    def build(self, shape):
        self.scale = self.add_weight(shape=(shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        return x * self.scale

def build():
    inputs = keras.Input((4, 4, 6))
    frozen = keras.layers.BatchNormalization(name="frozen")
    frozen.trainable = False
    x = frozen(inputs)
    x = keras.layers.GroupNormalization(groups=-1, name="inorm")(x)
    x = keras.layers.RMSNormalization(name="rms")(x)
    x = keras.layers.UnitNormalization(name="unit")(x)
    x = keras.layers.LayerNormalization(axis=[1, 2], center=False, name="ln")(x)
    x = PixelNorm(name="pixel")(x)
    return keras.Model(inputs, x)
"""
    )
    layers = by_path(inventory(f"{path}:build"))
    assert list(layers) == ["frozen", "inorm", "rms", "ln", "pixel"]  # UnitNormalization is not ours
    assert (layers["frozen"].mode, layers["frozen"].momentum) == (FROZEN, pytest.approx(0.99))
    assert (layers["inorm"].op, layers["inorm"].groups, layers["inorm"].kind) == (
        "in",
        6,
        "keras.layers.GroupNormalization(groups=-1)",
    )
    assert (layers["rms"].op, layers["rms"].eps, layers["rms"].axes, layers["rms"].bias) == ("rms", 1e-6, (-1,), False)
    assert (layers["ln"].axes, layers["ln"].weight, layers["ln"].bias, layers["ln"].eps) == ((1, 2), True, False, 1e-3)
    pixel = layers["pixel"]
    assert (pixel.basis, pixel.eps, pixel.param("weight").name) == (CANDIDATE, 1e-8, "pixel/scale")
