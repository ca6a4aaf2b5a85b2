"""The Python API: normcheck.check and normcheck.assert_matches, as a pytest user calls them."""

from __future__ import annotations

import numpy as np
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


@pytest.mark.parametrize(
    "numbers, message",
    [
        ({"rtol": float("nan"), "atol": float("nan")}, "rtol must be a finite number, got nan"),
        ({"rtol": 0.0, "atol": -1.0}, "atol must be at least 0, got -1.0"),
        ({"rtol": 1.0, "atol": 0.0}, "rtol must be at least 0 and below 1"),
        ({"rtol": 1e-3}, "rtol is given without atol; give rtol and atol together, or neither"),
        ({"atol": np.float32(1e-3)}, "atol is given without rtol"),
        ({"eps": float("inf")}, "eps must be a finite number, got inf"),
        ({"eps": 1e-320}, "eps must be positive, at least the smallest normal float64 (2.23e-308), and below 1"),
        ({"eps": 1.0}, "eps must be positive, at least the smallest normal float64 (2.23e-308), and below 1"),
        ({"eps": "1e-5"}, "eps must be a number, got '1e-5'"),
        ({"momentum": np.float64(2.0)}, "momentum must be in [0, 1] (the weight of the new batch), got 2.0"),
        ({"momentum": True}, "momentum must be a number, got True"),
        ({"timeout": -1}, "timeout must be positive, got -1"),
    ],
)
@pytest.mark.parametrize("call", [normcheck.check, normcheck.assert_matches])
def test_out_of_range_numbers_raise_a_usage_error_before_anything_runs(call, numbers, message):
    with pytest.raises(UsageError) as info:
        call("gn", tf.group_norm, **{**SMALL, **numbers})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_numpy_scalars_are_numbers():
    report = normcheck.check(
        "ln", framework="torch", shapes=[(2, 5)], dtypes="float32", kinds="normal", eps=np.float32(1e-5)
    )
    assert report.ok
    report = normcheck.check(
        "ln",
        framework="torch",
        shapes=[(2, 5)],
        dtypes="float32",
        kinds="normal",
        rtol=np.float64(0),
        atol=np.float32(0),
    )
    assert {r.tolerance.rtol for r in report.results if r.tolerance} == {0.0}
