"""Weight Standardization's inputs (normcheck.verify.ws_inputs): each kind shapes the weight as
documented, every value is representable in the case's dtype, and the seeds are stable."""

from __future__ import annotations

import numpy as np
import pytest

from normcheck.dtypes import quantize
from normcheck.ops import OPS
from normcheck.ops.weight_standardization import output_shape, weight_shape
from normcheck.verify import inputs, ws_inputs
from normcheck.verify.inputs import make_problem

SHAPE, PARAMS = OPS["ws"].default_cases()[0]
GN_SHAPE, GN_PARAMS = OPS["ws_gn"].default_cases()[1]


def test_the_kinds_are_the_other_ops_kinds_with_their_constants():
    assert ws_inputs.KINDS == inputs.KINDS
    assert (ws_inputs.LARGE_MEAN, ws_inputs.CONSTANT_VALUE, ws_inputs.HALF_RANGE) == (
        inputs.LARGE_MEAN,
        inputs.CONSTANT_VALUE,
        inputs.HALF_RANGE,
    )


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
@pytest.mark.parametrize("kind", ws_inputs.KINDS)
def test_shapes_and_values_representable_in_the_dtype(dtype, kind):
    p = make_problem("ws", SHAPE, PARAMS, dtype, kind, eps=1e-6)
    assert p.x.shape == SHAPE and p.weight.shape == weight_shape(SHAPE, PARAMS)
    assert p.dy.shape == output_shape(SHAPE, PARAMS) and p.bias.shape == (PARAMS.conv[0],)
    for a in (p.x, p.weight, p.dy, p.bias):
        assert np.array_equal(quantize(a, dtype), a)
        assert not a.flags.writeable


def test_each_kind_shapes_the_weight():
    w = {k: make_problem("ws", SHAPE, PARAMS, "float32", k, eps=1e-6).weight for k in ws_inputs.KINDS}
    assert abs(w["normal"].mean() - 0.1) < 0.1
    assert np.all(np.abs(w["large_mean"] - 1e4) < 1.0) and w["large_mean"].std() > 1e-3
    assert np.all(w["constant"][0] == 1.5) and w["constant"][1:].std() > 0.1
    assert w["tiny_scale"].std() < 1e-2
    assert np.abs(w["half_range"]).max() > 1e4 and np.abs(w["half_range"]).max() <= 6e4
    x = {k: make_problem("ws", SHAPE, PARAMS, "float32", k, eps=1e-6).x for k in ws_inputs.KINDS}
    assert all(abs(v.mean()) < 0.5 for v in x.values())  # the input stays standard normal


def test_ws_gn_has_the_group_norm_affine_and_no_convolution_bias():
    p = make_problem("ws_gn", GN_SHAPE, GN_PARAMS, "float32", "normal", eps=1e-6)
    assert p.bias is None
    assert p.gn_weight.shape == p.gn_bias.shape == (GN_PARAMS.conv[0],)
    assert make_problem("ws", SHAPE, PARAMS, "float32", "normal", eps=1e-6).gn_weight is None


def test_seeds_are_stable_and_differ_between_convolutions():
    a = make_problem("ws", SHAPE, PARAMS, "float32", "normal", eps=1e-6)
    b = make_problem("ws", SHAPE, PARAMS, "float32", "normal", eps=1e-6)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.weight, b.weight)
    other = OPS["ws"].cases_for_shape(SHAPE, None, None)
    c = make_problem("ws", SHAPE, other[0], "float32", "normal", eps=1e-6)
    d = make_problem("ws", SHAPE, other[1], "float32", "normal", eps=1e-6)
    assert not np.array_equal(c.x, d.x)  # the convolution is part of the case's identity


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown input kind"):
        ws_inputs.make_ws_problem("ws", SHAPE, PARAMS, "float32", "sparse", eps=1e-6)  # type: ignore[arg-type]
