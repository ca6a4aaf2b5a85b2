"""Conventions as data: the translation of eps and momentum, and the shape of the declarations.
(Each framework's values are checked against the installed framework in tests/frameworks.)"""

from __future__ import annotations

import numpy as np
import pytest

from normcheck.conventions import BIASED, CHANNELS_FIRST, MACHINE_EPS, NEW, OLD, Convention, settings
from normcheck.frameworks import CONVENTIONS
from normcheck.names import OP_NAMES

# conventions that are not a framework's, and the ops they have
PARTIAL = {"cs231n": {"bn", "ln", "gn"}}


def test_every_framework_declares_every_op():
    for framework, by_op in CONVENTIONS.items():
        assert set(by_op) == PARTIAL.get(framework, set(OP_NAMES)), framework
        for op, conv in by_op.items():
            assert (conv.framework, conv.op) == (framework, op)


@pytest.mark.parametrize(("framework", "op"), [(fw, op) for fw, by_op in CONVENTIONS.items() for op in by_op])
def test_declarations_are_consistent(framework, op):
    conv = CONVENTIONS[framework][op]
    assert conv.eps == MACHINE_EPS or 0 < conv.eps < 1
    # momentum, its meaning and the running variance come together or not at all
    assert (conv.momentum is None) == (conv.momentum_weights is None) == (conv.running_var is None)
    if op in ("ln", "gn", "rms"):
        assert conv.running_var is None
    if conv.fragile:
        assert conv.safe_setting, "a fragile default must name the setting that avoids it"


def test_momentum_meaning_old_is_translated_from_pytorchs():
    keras = CONVENTIONS["tensorflow"]["bn"]
    assert keras.momentum_weights == OLD
    assert keras.default_new_weight == pytest.approx(0.01)
    assert keras.to_framework_momentum(0.1) == pytest.approx(0.9)
    torch = CONVENTIONS["torch"]["bn"]
    assert torch.momentum_weights == NEW and torch.to_framework_momentum(0.1) == 0.1


def test_defaults_need_no_translation_note():
    s = settings(CONVENTIONS["tensorflow"]["bn"], "float32")
    assert s.eps == 1e-3 and s.momentum == pytest.approx(0.01) and s.framework_momentum == pytest.approx(0.99)
    assert not s.unbiased_running_var and s.notes == ()


def test_explicit_values_are_translated_with_a_note():
    s = settings(CONVENTIONS["tensorflow"]["bn"], "float32", eps=1e-5, momentum=0.1)
    assert s.eps == 1e-5 and s.momentum == 0.1 and s.framework_momentum == pytest.approx(0.9)
    assert len(s.notes) == 2
    assert "epsilon" in s.notes[0] or "eps=1e-05" in s.notes[0]
    assert "momentum=0.9 (the weight of the old value) for momentum 0.1" in s.notes[1]


def test_an_explicit_value_equal_to_the_default_is_not_noted():
    assert settings(CONVENTIONS["torch"]["bn"], "float32", eps=1e-5, momentum=0.1).notes == ()


def test_eps_below_a_floor_is_raised_and_said():
    conv = Convention(
        "x", "bn", api="fused", eps=1e-3, layout="channels_last", reduction="", affine="", eps_floor=1.001e-5
    )
    s = settings(conv, "float32", eps=1e-6)
    assert s.eps == 1.001e-5
    assert any("raised to 1.001e-05" in n for n in s.notes)


def test_machine_eps_depends_on_dtype():
    rms = CONVENTIONS["torch"]["rms"]
    assert rms.default_eps("float16") == rms.default_eps("float32") == pytest.approx(1.1920929e-07)
    assert rms.default_eps("float64") == pytest.approx(2.220446e-16)


def test_cs231n_declaration_matches_the_assignment_functions():
    """CS231n is no installed framework: its declaration is checked against the correct NumPy
    solution in fixtures/ (written to the assignment's param.get(...) defaults)."""
    from fixtures import cs231n_layers as layers

    conv = CONVENTIONS["cs231n"]
    rng = np.random.default_rng(0)
    x2, x4 = 1e-2 * rng.standard_normal((6, 4)), 1e-2 * rng.standard_normal((2, 4, 3, 3))
    one, zero = np.ones(4), np.zeros(4)
    one4, zero4 = one.reshape(1, 4, 1, 1), zero.reshape(1, 4, 1, 1)
    calls = {
        "bn": lambda p: layers.batchnorm_forward(x2, one, zero, {"mode": "train", **p})[0],
        "ln": lambda p: layers.layernorm_forward(x2, one, zero, p)[0],
        "gn": lambda p: layers.spatial_groupnorm_forward(x4, one4, zero4, 2, p)[0],
    }
    for op, call in calls.items():
        eps = conv[op].default_eps("float64")
        assert np.array_equal(call({}), call({"eps": eps})), op
        assert not np.allclose(call({}), call({"eps": 10 * eps})), op

    bn = conv["bn"]
    assert (bn.momentum_weights, bn.running_var, bn.layout) == (OLD, BIASED, CHANNELS_FIRST)
    param = {"mode": "train", "running_mean": np.full(4, 2.0), "running_var": np.full(4, 3.0)}
    layers.batchnorm_forward(x2, one, zero, param)
    m = bn.default_new_weight
    np.testing.assert_allclose(param["running_mean"], (1 - m) * 2.0 + m * x2.mean(axis=0))
    np.testing.assert_allclose(param["running_var"], (1 - m) * 3.0 + m * x2.var(axis=0))  # biased
    out = layers.spatial_batchnorm_forward(x4, one, zero, {"mode": "train"})[0]
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-12)  # per channel, axis 1
