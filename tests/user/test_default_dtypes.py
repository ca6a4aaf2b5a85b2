"""Defaults that fit the form: NumPy forms are checked in float64 and float32 unless a dtype is
named (NumPy has no bfloat16 and computes float16 in float16, so half rows would judge NumPy's
arithmetic, not the formula); every other form and the built-in frameworks keep all four."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from normcheck.cli import app
from normcheck.frameworks.base import Framework
from normcheck.names import DEFAULT_DTYPES
from normcheck.user import FORMS, UserFramework
from normcheck.verify.plan import Options, checked_dtypes

FIXTURES = "fixtures/cs231n_layers.py"
# a correct CS231n layer norm as a student writes it: no dtype anywhere, float16 computed in float16
TEXTBOOK = [
    "--impl",
    f"{FIXTURES}:layernorm_forward_textbook",
    "--backward",
    f"{FIXTURES}:layernorm_backward_textbook",
    "--style",
    "cs231n",
    "--format",
    "json",
]


def verify(*args: str):
    return CliRunner().invoke(app, ["verify", *args], catch_exceptions=False)


def test_a_correct_textbook_numpy_layer_norm_passes_by_default_without_half_rows():
    result = verify(*TEXTBOOK)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["results"]
    assert {r["dtype"] for r in rows} == {"float64", "float32"}
    assert {r["status"] for r in rows} <= {"pass", "skip"}
    assert sum(r["status"] == "pass" for r in rows) > len(rows) // 2


def test_a_named_half_dtype_still_runs_half_rows():
    result = verify(*TEXTBOOK, "--dtype", "float16", "--input", "normal,half_range")
    rows = json.loads(result.stdout)["results"]
    assert {r["dtype"] for r in rows} == {"float16"}
    assert any(r["status"] == "pass" for r in rows)
    # computed in float16 throughout, the textbook code loses its gradients to precision there
    assert result.exit_code == 1 and any(r["status"] == "fail" for r in rows)
    bf16 = verify(*TEXTBOOK, "--dtype", "bfloat16", "--input", "normal")
    reasons = {r["message"] for r in json.loads(bf16.stdout)["results"] if r["check"] == "run"}
    assert "bfloat16 not supported: NumPy has no bfloat16" in reasons


def _user(form: str) -> UserFramework:
    return UserFramework(FORMS[form], object(), "f", omit_defaults=False)


def _opts(dtypes: tuple, explicit: bool) -> Options:
    return Options(ops=("ln",), dtypes=dtypes, explicit_dtypes=explicit)


def test_each_form_declares_its_defaults():
    assert FORMS["cs231n"].dtypes == ("float64", "float32")
    assert _user("cs231n").dtypes == ("float64", "float32")
    others = [form for form in FORMS if form != "cs231n"]
    assert others and all(FORMS[form].dtypes is None for form in others)
    assert all(_user(form).dtypes == Framework.dtypes for form in others)


@pytest.mark.parametrize("form", ["cs231n", "torch_function"])
def test_a_named_dtype_is_checked_whatever_the_form_declares(form):
    fw = _user(form)
    assert checked_dtypes(_opts(("float16", "bfloat16"), explicit=True), fw) == ("float16", "bfloat16")
    defaults = checked_dtypes(_opts(DEFAULT_DTYPES, explicit=False), fw)
    assert defaults == (("float32", "float64") if form == "cs231n" else DEFAULT_DTYPES)
