"""The Python API: normcheck.check and normcheck.assert_matches, as a pytest user calls them."""

from __future__ import annotations

import pytest
from _require import require

torch = require("torch")

import normcheck
from fixtures import torch_functional as tf
from normcheck.errors import UsageError

SMALL = {"framework": "torch", "shapes": (2, 6, 5, 5), "groups": 3, "dtypes": ["float32"], "kinds": ["normal"]}


def test_assert_matches_passes_correct_code_and_returns_the_report():
    report = normcheck.assert_matches("gn", tf.group_norm, **SMALL)
    assert report.ok and report.counts["pass"] > 0


def test_assert_matches_raises_with_the_mismatch_report():
    with pytest.raises(AssertionError) as info:
        normcheck.assert_matches("gn", "fixtures/torch_functional.py:group_norm_unbiased_var", **SMALL)
    text = str(info.value)
    assert text.startswith("normcheck: ")
    assert "FAIL gn group_norm_unbiased_var 2x6x5x5 G=3 float32" in text
    assert "diagnosis: variance divides by N-1" in text


def test_check_never_raises_for_broken_code():
    report = normcheck.check("gn", "fixtures/broken_impls.py:raises", **SMALL)
    assert not report.ok
    assert {r.status for r in report.results} == {"error"}


def test_builtin_frameworks_without_impl():
    report = normcheck.check(
        "gn", framework="torch", shapes=[(2, 6, 5, 5)], groups=[3], dtypes="float64", kinds="normal"
    )
    assert report.ok
    assert {r.case.framework for r in report.results} == {"torch"}


def test_unknown_option_is_a_type_error():
    with pytest.raises(TypeError, match="unknown option"):
        normcheck.check("gn", tf.group_norm, colour="red")


def test_usage_error_for_nonsense():
    with pytest.raises(UsageError, match="unknown dtype"):
        normcheck.check("gn", tf.group_norm, framework="torch", dtypes="float8")


def test_strict_makes_known_defects_fail():
    opts = {"framework": "torch", "shapes": [(2, 6, 4, 4)], "groups": [3], "dtypes": "float32", "kinds": "large_mean"}
    assert normcheck.check("gn", **opts).counts["known"] > 0
    assert normcheck.check("gn", **opts).ok
    assert not normcheck.check("gn", **opts, strict=True).ok
