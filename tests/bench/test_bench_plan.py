"""bench --shape: every shape an op cannot take, or this machine cannot hold, is a UsageError."""

from __future__ import annotations

import pytest

from normcheck.bench import plan as plan_module
from normcheck.bench.plan import BenchRequest, prepare
from normcheck.bench.shapes import shape_params
from normcheck.errors import UsageError


@pytest.mark.parametrize(
    "op, shape, message",
    [
        ("gn", "2", "group norm needs a 2+-D input, got shape 2"),
        ("bn", "2", "batch norm needs a 2..5-D input, got shape 2"),
        ("in", "2", "instance norm needs a 3..5-D input, got shape 2"),
        ("in", "2,3", "instance norm needs a 3..5-D input, got shape 2x3"),
        ("bn", "2,3,4,5,6,7", "batch norm needs a 2..5-D input, got shape 2x3x4x5x6x7"),
        ("bn", "1,3", "batch norm in training needs more than one value per channel, got shape 1x3"),
        ("gn", "0", "malformed shape '0'; every size must be a positive integer"),
        ("ln", "2,0,3", "malformed shape '2,0,3'; every size must be a positive integer"),
        ("rms", "2,x", "malformed shape '2,x'"),
    ],
)
def test_a_shape_the_op_cannot_take_is_a_usage_error(op, shape, message):
    with pytest.raises(UsageError) as info:
        prepare(BenchRequest(frameworks="numpy", ops=op, shapes=(shape,)))
    assert message in str(info.value)


@pytest.mark.parametrize("op", ["ln", "rms", "gn"])
def test_small_valid_shapes_are_planned(op):
    shape = "2" if op != "gn" else "2,3"
    plan = prepare(BenchRequest(frameworks="numpy", ops=op, shapes=(shape,)))
    assert [s.shape for s in plan.shapes[op]] == [tuple(int(n) for n in shape.split(","))]


def test_group_norm_params_of_a_1d_shape_do_not_crash():
    assert shape_params("gn", (2,)).groups == 1


def test_a_shape_beyond_this_machines_memory_is_refused_before_allocation(monkeypatch):
    def no_framework(name, op):
        raise AssertionError("a framework was loaded for a shape that cannot fit")

    monkeypatch.setattr(plan_module, "_builtin_impls", no_framework)
    with pytest.raises(
        UsageError,
        match=r"shape 1000000,1000000,1000000 needs about .* for its tensors; "
        r"this machine has .* available",
    ):
        prepare(BenchRequest(frameworks="numpy", ops="ln", shapes=("1000000,1000000,1000000",)))
