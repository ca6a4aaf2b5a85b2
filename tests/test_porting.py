"""normcheck conventions' records: differences flagged, each with its translation rule."""

from __future__ import annotations

from normcheck.names import OP_NAMES
from normcheck.porting import FRAMEWORK_ORDER, convention_rows


def _row(rows, op, prop):
    return next(r for r in rows if r["op"] == op and r["property"] == prop)


def test_one_row_per_applicable_property_with_every_framework():
    rows = convention_rows(OP_NAMES)
    for r in rows:
        assert set(FRAMEWORK_ORDER) <= set(r)
    assert {r["op"] for r in rows} == set(OP_NAMES)
    # properties that apply to no framework are left out
    assert not any(r["property"] == "default groups" for r in rows if r["op"] != "gn")
    assert not any(r["property"] == "layout" for r in rows if r["op"] in ("ln", "rms"))


def test_every_difference_has_a_translation_rule():
    for r in convention_rows(OP_NAMES):
        if r["differs"]:
            assert r["when porting"], r
        else:
            assert r["when porting"] == ""


def test_momentum_rule_gives_the_translation():
    r = _row(convention_rows(("bn",)), "bn", "momentum")
    assert r["differs"]
    assert "momentum_old = 1 - momentum_new" in r["when porting"]
    assert r["torch"] == "0.1 (weight of the new batch)" and r["tensorflow"] == "0.99 (weight of the old value)"


def test_running_variance_and_fragile_variance_are_flagged():
    rows = convention_rows(("bn", "gn"))
    assert _row(rows, "bn", "running variance")["differs"]
    variance = _row(rows, "gn", "variance")
    assert variance["differs"] and "use_fast_variance=False" in variance["when porting"]


def test_descriptive_properties_are_never_flagged():
    for r in convention_rows(OP_NAMES):
        if r["property"] in ("api", "notes", "statistics over"):
            assert not r["differs"]


def test_a_subset_of_frameworks():
    rows = convention_rows(("gn",), ("torch", "onnxruntime"))
    assert not _row(rows, "gn", "layout")["differs"]  # both channels-first
    assert "tensorflow" not in rows[0]


def test_a_convention_without_the_op_shows_a_dash_and_is_not_compared():
    rows = convention_rows(("in", "bn"), ("torch", "cs231n"))
    eps = _row(rows, "in", "eps")
    assert eps["cs231n"] == "—" and eps["torch"] == "1e-05" and not eps["differs"]
    assert _row(rows, "bn", "momentum")["differs"] and not _row(rows, "bn", "eps")["differs"]
    assert convention_rows(("in", "rms"), ("cs231n",)) == []


def test_cs231n_is_not_among_the_frameworks_by_default():
    assert all("cs231n" not in r for r in convention_rows(OP_NAMES))
