"""The inventory of Flax models: linen (module, variables), with setup and compact submodules, and nnx."""

from __future__ import annotations

import pytest
from _require import require

require("jax", "flax")

from _models import MODELS, by_path, inventory

from normcheck.model.records import CANDIDATE, EVAL, OLD, ONE_PASS, TWO_PASS

FLAX = f"{MODELS}/flax_models.py"


def test_linen_setup_submodules_come_with_their_settings_and_compact_ones_by_name():
    inv = inventory(f"{FLAX}:build_linen")
    assert (inv.framework, inv.loader, inv.model) == ("jax", "Flax linen", "LinenCNN")
    layers = by_path(inv)
    assert list(layers) == ["bn1", "gn2", "head/LayerNorm_0"]
    bn, gn, ln = layers["bn1"], layers["gn2"], layers["head/LayerNorm_0"]
    assert (bn.kind, bn.eps, bn.momentum, bn.momentum_weights, bn.mode, bn.channel_axis) == (
        "flax.linen.BatchNorm",
        1e-4,
        0.8,
        OLD,
        EVAL,
        -1,
    )
    assert bn.variance == ONE_PASS  # Flax's default use_fast_variance=True
    assert [(p.role, p.name) for p in bn.params] == [
        ("weight", "params/bn1/scale"),
        ("bias", "params/bn1/bias"),
        ("running_mean", "batch_stats/bn1/mean"),
        ("running_var", "batch_stats/bn1/var"),
    ]
    assert (gn.kind, gn.groups, gn.eps, gn.variance) == ("flax.linen.GroupNorm", 4, 1e-6, TWO_PASS)
    assert (ln.kind, ln.basis, ln.confirmed, ln.eps, ln.op) == ("flax.linen.LayerNorm", CANDIDATE, False, None, "ln")


def test_an_example_input_shape_reveals_compact_submodules_settings():
    layers = by_path(inventory(f"{FLAX}:build_linen_with_input"))
    ln = layers["head/LayerNorm_0"]
    assert (ln.confirmed, ln.eps, ln.axes, ln.feature_shape) == (True, 1e-5, (-1,), (10,))


def test_nnx_modules():
    inv = inventory(f"{FLAX}:build_nnx")
    assert (inv.loader, inv.model) == ("Flax nnx", "NnxCNN")
    layers = by_path(inv)
    assert set(layers) == {"bn1", "gn2", "head_norm"}
    assert (layers["bn1"].kind, layers["bn1"].mode, layers["bn1"].eps, layers["bn1"].momentum) == (
        "flax.nnx.BatchNorm",
        EVAL,
        1e-4,
        pytest.approx(0.8),
    )
    assert (layers["gn2"].groups, layers["head_norm"].op, layers["head_norm"].eps) == (4, "rms", 1e-6)
    assert layers["bn1"].param("running_var").shape == (8,)


def test_a_linen_module_without_variables_is_refused(tmp_path):
    from normcheck.errors import UsageError

    path = tmp_path / "net.py"
    path.write_text("import flax.linen as nn\n\ndef build():\n    return nn.LayerNorm()\n")
    with pytest.raises(UsageError, match=r"without its variables: return \(module, variables\)"):
        inventory(f"{path}:build")


def test_linen_instance_norm_rms_norm_and_a_user_layer(tmp_path):
    path = tmp_path / "net.py"
    path.write_text(
        """
import flax.linen as nn
import jax
import jax.numpy as jnp

class ScaleNorm(nn.Module):
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x):
        g = self.param("scale", nn.initializers.ones, (1,))
        return x * g

class Net(nn.Module):
    def setup(self):
        self.inorm = nn.InstanceNorm(epsilon=1e-3)
        self.rms = nn.RMSNorm(epsilon=1e-5, reduction_axes=(-2, -1))
        self.user = ScaleNorm()

    def __call__(self, x):
        return self.user(self.rms(self.inorm(x)))

def build():
    net = Net()
    return net, net.init(jax.random.key(0), jnp.ones((2, 4, 4, 3)))
"""
    )
    layers = by_path(inventory(f"{path}:build"))
    assert (layers["inorm"].op, layers["inorm"].eps, layers["inorm"].channel_axis) == ("in", 1e-3, -1)
    assert (layers["rms"].op, layers["rms"].axes, layers["rms"].bias) == ("rms", (-2, -1), False)
    user = layers["user"]
    assert (user.basis, user.eps, user.param("weight").name) == (CANDIDATE, 1e-5, "params/user/scale")
