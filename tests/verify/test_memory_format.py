"""The stress profile's memory_format row, judged from the formats an adapter recorded: pass when
channels_last is kept, fail naming what was lost, known only where a documented defect says the
results come back contiguous and they all do; no row where there is nothing to judge."""

from __future__ import annotations

from normcheck.frameworks.base import FrameworkFacts, KnownIssue, RunOutput
from normcheck.frameworks.torch.facts import KNOWN_ISSUES, TORCH
from normcheck.ops import OpParams
from normcheck.verify.memory_format import CONTIGUOUS_OUTPUT, MEMORY_FORMAT, memory_format_rows
from normcheck.verify.records import FAIL, KNOWN, PASS, Case

NONE = FrameworkFacts("torch", TORCH)
DOCUMENTED = FrameworkFacts("torch", TORCH, KNOWN_ISSUES)


def _case(op="gn", layout="channels_last", dtype="float32", shape=(8, 64, 16, 16)):
    params = OpParams(groups=4) if op == "gn" else OpParams(normalized_ndim=3) if op == "ln" else OpParams()
    return Case(op, "torch", "F.x", shape, params, dtype, "normal", layout)


def _out(forward, grad_input="channels_last"):
    return RunOutput(memory_formats={"forward": forward, "grad_input": grad_input})


def test_kept_passes_and_lost_fails_naming_each_result():
    (row,) = memory_format_rows(_case(), _out("channels_last"), NONE)
    assert (row.check, row.status, row.diagnosis) == (MEMORY_FORMAT, PASS, None)
    assert row.message == "forward and grad_input kept channels_last"
    (row,) = memory_format_rows(_case(), _out("contiguous", "strided"), NONE)
    assert row.status == FAIL and row.diagnosis is None and row.comparison is None  # never a numeric cause
    assert row.message.startswith("forward came back contiguous; grad_input came back strided for channels_last input")


def test_only_channel_ops_on_channels_last_input_with_recorded_formats_get_a_row():
    assert memory_format_rows(_case(layout="contiguous"), _out("contiguous"), NONE) == []
    assert memory_format_rows(_case("ln"), _out("contiguous"), NONE) == []  # layer norm promises no format
    assert memory_format_rows(_case(), RunOutput(), NONE) == []  # a framework that records none
    for op in ("bn", "in", "gn"):
        assert len(memory_format_rows(_case(op), _out("channels_last"), NONE)) == 1


def test_torch_instance_norm_losing_the_format_is_known_and_confirmed_by_the_formats():
    for dtype in ("float32", "bfloat16"):
        (row,) = memory_format_rows(_case("in", dtype=dtype), _out("contiguous", "contiguous"), DOCUMENTED)
        assert row.status == KNOWN and row.message.startswith("known defect: PyTorch's CPU instance norm returns")
        assert row.diagnosis is not None and row.diagnosis.hypothesis == CONTIGUOUS_OUTPUT
        assert row.diagnosis.evidence == "recorded: forward contiguous, grad_input contiguous"
    # another loss than the documented one, another op, another device: plain failures
    (row,) = memory_format_rows(_case("in"), _out("strided", "contiguous"), DOCUMENTED)
    assert row.status == FAIL
    (row,) = memory_format_rows(_case("gn"), _out("contiguous", "contiguous"), DOCUMENTED)
    assert row.status == FAIL
    cuda = Case("in", "torch", "F.x", (8, 64, 16, 16), OpParams(), "float32", "normal", "channels_last", "cuda")
    (row,) = memory_format_rows(cuda, _out("contiguous", "contiguous"), DOCUMENTED)
    assert row.status == FAIL


def test_a_numeric_defect_matching_every_check_does_not_make_a_format_loss_known():
    numeric = KnownIssue("half statistics", ops=("in",), hypotheses=("stats_in_input_dtype",), dtypes=("bfloat16",))
    facts = FrameworkFacts("torch", TORCH, (numeric,))
    (row,) = memory_format_rows(_case("in", dtype="bfloat16"), _out("contiguous", "contiguous"), facts)
    assert row.status == FAIL
