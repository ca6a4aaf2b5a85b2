"""verify's stress profile: its table covers what the issue asks for (2^16 rows, 2^31 elements,
hidden sizes that are no power of two, many half rows, strided inputs, channels_last, in-place
calls), plans only its own cases, in the layouts each implementation offers, skips what cannot fit
with the reason, and leaves the default and quick profiles as they were."""

from __future__ import annotations

from collections import Counter

import pytest

from normcheck.errors import UsageError
from normcheck.names import (
    ALL_OP_NAMES,
    CHANNELS_LAST,
    CONTIGUOUS,
    DEFAULT_DTYPES,
    DTYPE_NAMES,
    EXPANDED,
    IN_PLACE,
    KIND_NAMES,
    LAYOUTS,
    OP_NAMES,
    REPEATED,
    SLICED,
    STRESS_KIND_NAMES,
    TRANSPOSED,
    VERIFY_PROFILES,
)
from normcheck.ops import OPS
from normcheck.verify.plan import Options, op_cases, plan
from normcheck.verify.request import Request, validate
from normcheck.verify.stress_cases import (
    HIDDEN,
    HUGE,
    STRESS_CASES,
    STRESS_OPS,
    stress_case,
    stress_cases,
    stress_layouts,
    stress_skip,
)

CPU = [c for c in STRESS_CASES if c.cpu]


def _rows(case):
    return case.numel // case.shape[-1]


def test_every_case_is_valid_and_says_what_it_exposes():
    seen = Counter((c.op, c.shape, c.params) for c in STRESS_CASES)
    assert max(seen.values()) == 1, [k for k, n in seen.items() if n > 1]  # the plan finds a case by these
    for c in STRESS_CASES:
        assert OPS[c.op].validate(c.shape, c.params) is None, c
        assert c.exposes and c.dtypes and c.kinds and c.layouts, c
        assert set(c.dtypes) <= set(DTYPE_NAMES) and set(c.layouts) <= set(LAYOUTS), c
        assert set(c.kinds) <= set(KIND_NAMES + STRESS_KIND_NAMES), c
        # a broadcast batch needs identical samples, and identical samples are for it alone
        assert (EXPANDED in c.layouts) == (REPEATED in c.kinds), c


def test_the_table_holds_what_the_issue_asks_for():
    assert any(_rows(c) >= 2**16 for c in CPU if c.op in ("ln", "rms"))
    assert any(c.numel >= 2**31 for c in STRESS_CASES)
    for hidden in HIDDEN:
        assert {c.op for c in CPU if c.shape[-1] == hidden} >= {"ln", "rms"}, hidden
    many_half_rows = [c for c in CPU if _rows(c) >= 2**16 and {"float16", "bfloat16"} <= set(c.dtypes)]
    assert {c.op for c in many_half_rows} >= {"ln", "rms"}
    layouts = {layout for c in CPU for layout in c.layouts}
    assert {SLICED, TRANSPOSED, EXPANDED, CHANNELS_LAST, IN_PLACE} <= layouts
    assert {c.op for c in CPU if CHANNELS_LAST in c.layouts} == {"bn", "in", "gn"}
    assert {len(c.shape) for c in CPU if CHANNELS_LAST in c.layouts} == {4, 5}
    assert set(STRESS_OPS) == {*OP_NAMES, "add_rms", "add_ln"}


def test_the_cpu_subset_and_the_full_set():
    for op in STRESS_OPS:
        full = stress_cases(op, "cuda")
        assert full == [c for c in STRESS_CASES if c.op == op]
        cpu = stress_cases(op, "cpu")
        assert cpu == [c for c in full if c.cpu or c.numel >= HUGE]  # the 2^31 case is planned there, as a skip
    assert len(CPU) < len(STRESS_CASES)


def test_what_cannot_fit_or_run_here_is_skipped_with_how_much_it_needs():
    huge = next(c for c in STRESS_CASES if c.numel >= HUGE)
    enough = 2**50
    assert stress_skip(huge, "cuda", available=enough) is None
    message = stress_skip(huge, "cuda", available=2**34)
    assert message is not None and "needs about 192.0 GiB" in message and "16.0 GiB available" in message
    on_cpu = stress_skip(huge, "cpu", available=enough)
    assert on_cpu is not None and "--device cuda only" in on_cpu and "192.0 GiB" in on_cpu
    small = CPU[0]
    assert stress_skip(small, "cpu", available=enough) is None


def test_layouts_pair_the_broadcast_with_repeated_input():
    case = next(c for c in CPU if EXPANDED in c.layouts)
    offered = (CONTIGUOUS, CHANNELS_LAST, SLICED, TRANSPOSED, EXPANDED, IN_PLACE)
    assert stress_layouts(case, "normal", offered) == (SLICED, TRANSPOSED)
    assert stress_layouts(case, REPEATED, offered) == (EXPANDED,)
    assert stress_layouts(case, "normal", (CONTIGUOUS, CHANNELS_LAST)) == ()  # no views: nothing to run


class _Impl:
    def __init__(self, name, views):
        self.name, self.views = name, views

    def layouts(self, shape):
        return (CONTIGUOUS, CHANNELS_LAST) if len(shape) in (4, 5) else (CONTIGUOUS,)

    def stress_layouts(self, shape):
        return self.views


class _Fw:
    """A framework as plan sees it: a function that takes every stress layout, a layer that takes
    the views, and a second framework with no view at all."""

    dtypes = DEFAULT_DTYPES

    def __init__(self, name, impls):
        self.name, self.impls = name, impls

    def case_params(self, op, params):
        return params

    def implementations(self, op):
        return self.impls


TORCH_LIKE = _Fw("torchlike", [_Impl("fn", (SLICED, TRANSPOSED, EXPANDED, IN_PLACE)), _Impl("layer", (SLICED,))])
PLAIN = _Fw("plain", [_Impl("only", ())])


def _plan(**kw):
    opts = Options(ops=STRESS_OPS, dtypes=DEFAULT_DTYPES, profile="stress", kinds=KIND_NAMES + STRESS_KIND_NAMES)
    return plan(Options(**{**opts.__dict__, **kw}), [TORCH_LIKE, PLAIN])  # type: ignore[list-item]


def test_the_stress_profile_plans_its_own_cases_in_the_layouts_offered():
    units = _plan()
    for u in units:
        case = stress_case(u.op, u.shape, u.params)
        assert case is not None and u.dtype in case.dtypes and u.kind in case.kinds, u
        for c, impl in u.runs:
            assert c.layout in case.layouts and c.layout in (*impl.layouts(u.shape), *impl.stress_layouts(u.shape))
            assert (c.layout == EXPANDED) == (u.kind == REPEATED)
        assert u.runs  # a case in views nobody offers is not planned at all
    planned = {(u.op, u.shape) for u in units if u.framework is TORCH_LIKE}
    assert planned == {(c.op, c.shape) for c in STRESS_CASES if c.cpu or c.numel >= HUGE}
    assert not any(
        c.layout in (SLICED, TRANSPOSED, EXPANDED, IN_PLACE) for u in units for c, _ in u.runs if u.framework is PLAIN
    )
    in_place = {c.impl for u in units for c, _ in u.runs if c.layout == IN_PLACE}
    assert in_place == {"fn"}
    (huge,) = [u for u in units if u.framework is TORCH_LIKE and u.shape == (2**21, 1024)]
    assert huge.skip is not None and "192.0 GiB" in huge.skip  # what it needs, whichever reason comes first


def test_the_device_chooses_the_set_and_flags_narrow_it():
    cuda = {(u.op, u.shape) for u in _plan(device="cuda")}
    assert cuda == {(c.op, c.shape) for c in STRESS_CASES}
    narrow = _plan(ops=("ln",), dtypes=("bfloat16",), kinds=("normal",))
    assert narrow and all(u.op == "ln" and u.dtype == "bfloat16" and u.kind == "normal" for u in narrow)


def test_layer_and_rms_norm_of_the_same_shape_are_both_planned():
    """The plan's dedup of a framework's equal cases counts the op (before, --op ln,rms lost the RMS
    norm cases that shared a shape and params with layer norm's)."""
    for profile in ("default", "stress"):
        both = Counter(u.op for u in _plan(ops=("ln", "rms"), profile=profile))
        alone = Counter(u.op for op in ("ln", "rms") for u in _plan(ops=(op,), profile=profile))
        assert both == alone, profile


def test_the_default_and_quick_profiles_plan_no_stress_case():
    for profile in ("default", "quick"):
        units = _plan(ops=OP_NAMES, profile=profile, kinds=KIND_NAMES)
        assert all(c.layout in (CONTIGUOUS, CHANNELS_LAST) for u in units for c, _ in u.runs)
        assert not any(stress_case(u.op, u.shape, u.params) for u in units)
    opts = Options(ops=OP_NAMES, dtypes=DEFAULT_DTYPES)
    for op in OP_NAMES:
        assert op_cases(op, opts) == OPS[op].default_cases()


def test_requests_of_the_stress_profile():
    assert "stress" in VERIFY_PROFILES
    validate(Request(ops="ln,add_rms", frameworks="torch", profile="stress", kinds="normal,repeated"))
    with pytest.raises(UsageError, match="choose from default, quick, stress"):
        validate(Request(ops="ln", frameworks="torch", profile="huge"))
    with pytest.raises(UsageError, match="profile stress checks its own cases; give shape or profile"):
        validate(Request(ops="ln", frameworks="torch", profile="stress", shapes=["4,16"]))
    with pytest.raises(UsageError, match="unknown input kind 'repeated'"):
        validate(Request(ops="ln", frameworks="torch", kinds="repeated"))  # the stress profile's own
    with pytest.raises(UsageError, match="covers the five plain ops"):
        validate(Request(ops="rms", frameworks="torch", profile="stress", variant="gemma"))
    with pytest.raises(UsageError, match="runs in one process"):
        validate(Request(ops="bn", frameworks="torch", profile="stress", world_size="2"))
    for op in set(ALL_OP_NAMES) - set(STRESS_OPS):
        with pytest.raises(UsageError):
            validate(Request(ops=op, frameworks="torch", profile="stress"))


def test_bench_keeps_its_own_profiles():
    from normcheck.bench.plan import BenchRequest
    from normcheck.bench.plan import validate as validate_bench

    with pytest.raises(UsageError, match="unknown profile 'stress'; choose from default, quick"):
        validate_bench(BenchRequest(ops="ln", profile="stress"))
