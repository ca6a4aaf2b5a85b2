"""verify's quick profile: its cases come from the default grid, cover what the grid exposes,
and plan only those cases."""

from __future__ import annotations

import pytest

from normcheck.dtypes import HALF
from normcheck.errors import UsageError
from normcheck.names import DEFAULT_DTYPES, OP_NAMES
from normcheck.ops import OPS
from normcheck.verify.exposure import exposure
from normcheck.verify.plan import Options, plan
from normcheck.verify.quick_cases import QUICK, QuickCase
from normcheck.verify.quick_derivation import grid_items
from normcheck.verify.request import Request, validate


@pytest.mark.parametrize("op", OP_NAMES)
def test_quick_cases_are_cases_of_the_default_grid(op):
    grid = OPS[op].default_cases()
    for case in QUICK[op]:
        assert (case.shape, case.params) in grid, case
        assert OPS[op].validate(case.shape, case.params) is None


@pytest.mark.parametrize("op", OP_NAMES)
def test_quick_cases_run_every_dtype_and_pair_each_half_case_with_its_float32_twin(op):
    assert {c.dtype for c in QUICK[op]} == set(DEFAULT_DTYPES)
    for case in QUICK[op]:
        if case.dtype in HALF:
            assert QuickCase(case.shape, case.params, "float32", case.kind) in QUICK[op], case


@pytest.mark.slow
@pytest.mark.parametrize("op", OP_NAMES)
def test_quick_cases_cover_everything_the_default_grid_exposes(op):
    """Every known mistake the grid exposes (robustly), every dtype, rank and kind of parameters:
    if a hypothesis or the grid changed, rerun benchmarks/derive_quick_profile.py."""
    items = grid_items(op)
    needed = set().union(*items.values())
    covered = set().union(*(items[c] for c in QUICK[op]))
    assert needed <= covered, f"not covered: {sorted(needed - covered)}; rerun benchmarks/derive_quick_profile.py"


def test_exposure_finds_a_formula_mistake_where_it_shows_and_not_where_it_cannot():
    gn = next(c for c in QUICK["gn"] if c.dtype == "float32" and c.params.groups == 3)
    assert "eps_value" in exposure("gn", gn)
    one_channel_groups = QuickCase((2, 6, 5, 5), OPS["gn"].default_cases()[3][1], "float32", "normal")
    assert one_channel_groups.params.groups == 6
    assert "groups_interleaved" not in exposure("gn", one_channel_groups)  # one channel a group: no order


class _Fw:
    """A framework as plan sees it: every op's params as given, one implementation."""

    name = "fake"
    dtypes = DEFAULT_DTYPES

    def case_params(self, op, params):
        return params

    def implementations(self, op):
        class _Impl:
            name = "impl"

            def layouts(self, shape):
                return ("contiguous",)

        return [_Impl()]


def test_the_quick_profile_plans_exactly_its_cases():
    opts = Options(ops=OP_NAMES, dtypes=DEFAULT_DTYPES, profile="quick")
    units = plan(opts, [_Fw()])  # type: ignore[list-item]
    planned = {(u.op, QuickCase(u.shape, u.params, u.dtype, u.kind)) for u in units}
    assert planned == {(op, c) for op in OP_NAMES for c in QUICK[op]}
    assert len(units) == len(planned)


def test_dtype_and_input_flags_narrow_the_quick_profile():
    opts = Options(ops=("gn",), dtypes=("float16",), kinds=("large_mean",), profile="quick")
    units = plan(opts, [_Fw()])  # type: ignore[list-item]
    assert [(u.shape, u.dtype, u.kind) for u in units] == [
        (c.shape, c.dtype, c.kind) for c in QUICK["gn"] if c.dtype == "float16" and c.kind == "large_mean"
    ]


def test_a_profile_is_named_and_chooses_its_own_shapes():
    with pytest.raises(UsageError, match="unknown profile 'fast'"):
        validate(Request(ops="gn", frameworks="numpy", profile="fast"))
    with pytest.raises(UsageError, match="give shape or profile"):
        validate(Request(ops="gn", shapes=["2,4,3"], profile="quick"))
