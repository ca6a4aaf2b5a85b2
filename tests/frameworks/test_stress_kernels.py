"""fixtures/stress_kernels.py: kernels whose bugs only the stress profile's sizes and memory formats
show pass the default and quick profiles, and fail the stress profile on exactly the cases that
expose them, with the diagnosis (or the memory_format row) that names the bug."""

from __future__ import annotations

import pytest
from _require import require

from normcheck.names import CHANNELS_LAST
from normcheck.verify.local import run
from normcheck.verify.memory_format import MEMORY_FORMAT
from normcheck.verify.records import ERROR, FAIL, KNOWN, PASS
from normcheck.verify.request import Request, prepare

require("torch")

KERNELS = "fixtures/stress_kernels.py"
BUGGY = {
    "layer_norm_row_index_wraps": "ln",
    "rms_norm_power_of_two_block": "rms",
    "layer_norm_half_weight_grad": "ln",
    "group_norm_contiguous_output": "gn",
}


def _rows(name, op, **request):
    prepared = prepare(Request(ops=op, impl=f"{KERNELS}:{name}", frameworks="torch", **request))
    return list(run(prepared.units, prepared.opts))


def _bad(rows):
    return [r for r in rows if r.status in (FAIL, ERROR, KNOWN)]


@pytest.mark.parametrize("name", sorted(BUGGY))
def test_the_quick_profile_passes_every_stress_kernel(name):
    rows = _rows(name, BUGGY[name], profile="quick")
    assert rows and not _bad(rows), [(r.case.shape, r.check, r.message) for r in _bad(rows)][:3]


@pytest.mark.parametrize("name", sorted(BUGGY))
def test_the_default_profile_passes_every_stress_kernel(name):
    rows = _rows(name, BUGGY[name], dtypes="float32,bfloat16,float16")
    assert rows and not _bad(rows), [(r.case.shape, r.check, r.message) for r in _bad(rows)][:3]


def test_rows_past_65535_are_wrong_and_named():
    rows = _rows("layer_norm_row_index_wraps", "ln", profile="stress", dtypes="float32", kinds="normal")
    failing = [r for r in rows if r.status == FAIL]
    assert {r.case.shape for r in failing} == {(2**16 + 3, 8)}
    assert {"forward", "grad_input", "grad_weight"} <= {r.check for r in failing}
    for r in failing:
        assert r.diagnosis is not None and r.diagnosis.hypothesis == "row_index_wraps", r.diagnosis
        assert "rows 65536 and past use the statistics of row r - 65536" in r.diagnosis.cause
    assert not [r for r in rows if r.status == ERROR]


def test_hidden_sizes_that_are_no_power_of_two_are_wrong_and_named():
    rows = _rows("rms_norm_power_of_two_block", "rms", profile="stress", dtypes="float32", kinds="normal")
    failing = [r for r in rows if r.status == FAIL]
    assert {r.case.shape[-1] for r in failing} == {4095, 4097, 5120, 8191}
    for r in failing:
        hidden = r.case.shape[-1]
        block = 1 << (hidden.bit_length() - 1)
        assert r.diagnosis is not None and r.diagnosis.hypothesis == "partial_row_reduction", r.diagnosis
        assert f"first {block} of the row's {hidden} values" in r.diagnosis.cause
    assert all(r.status == PASS for r in rows if r.case.shape[-1] < 1024 and r.status != "skip")


def test_half_weight_gradients_over_many_rows_are_wrong_and_named():
    rows = _rows("layer_norm_half_weight_grad", "ln", profile="stress", dtypes="bfloat16", kinds="normal")
    failing = [r for r in rows if r.status == FAIL]
    assert {(r.case.shape, r.case.dtype) for r in failing} == {((2**16 + 3, 8), "bfloat16")}
    assert {r.check for r in failing} == {"grad_weight", "grad_bias"}
    for r in failing:
        assert r.diagnosis is not None and r.diagnosis.hypothesis == "half_param_accumulation", r.diagnosis
        assert "accumulated in bfloat16 over 65539 values" in r.diagnosis.cause
        assert "float32" in r.diagnosis.fix


def test_a_lost_channels_last_format_is_its_own_row_and_the_values_still_pass():
    rows = _rows("group_norm_contiguous_output", "gn", profile="stress", dtypes="float32")
    formats = [r for r in rows if r.check == MEMORY_FORMAT]
    assert formats and all(r.status == FAIL and r.case.layout == CHANNELS_LAST for r in formats)
    assert all("forward came back contiguous; grad_input came back contiguous" in r.message for r in formats)
    assert all(r.status == PASS for r in rows if r.check != MEMORY_FORMAT and r.status != "skip")
    kept = _rows("group_norm_keeps_format", "gn", profile="stress", dtypes="float32")
    assert {r.status for r in kept if r.check == MEMORY_FORMAT} == {PASS}
    assert not _bad(kept)
