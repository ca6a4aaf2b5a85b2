"""--impl SPEC: parsing, loading, form detection, and the rows for code that cannot be used."""

from __future__ import annotations

import time

import pytest
from _require import require

torch = require("torch")

import normcheck
from normcheck.errors import UsageError
from normcheck.user import FormError, detect_form, guess_op
from normcheck.user.spec import LoadError, SpecError, load_object, parse_spec
from normcheck.verify.records import ERROR, PASS, RUN

BROKEN = "fixtures/broken_impls.py"
SMALL = {"framework": "torch", "shapes": [(2, 4, 3)], "groups": [2], "dtypes": "float32", "kinds": "normal"}


@pytest.mark.parametrize("text", ["nocolon", ":name", "file.py:", "file.py:not-a-name"])
def test_malformed_spec(text):
    with pytest.raises(SpecError, match="malformed implementation"):
        parse_spec(text)


def test_spec_forms():
    assert parse_spec("pkg.mod:Name").is_path is False
    assert parse_spec("dir/file.py:Name.method").attr == "Name.method"
    assert parse_spec("C:/dir/file.py:Name").target == "C:/dir/file.py"


def test_loads_a_file_inside_a_package_with_relative_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helpers.py").write_text("SCALE = 3\n")
    (pkg / "layers.py").write_text("from .helpers import SCALE\n\ndef f():\n    return SCALE\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_object(parse_spec(f"{pkg}/layers.py:f"))() == 3
    assert load_object(parse_spec("mypkg.layers:f"))() == 3


def test_a_file_named_like_a_stdlib_module_is_its_own(tmp_path):
    (tmp_path / "json.py").write_text("VALUE = 'mine'\n")
    assert load_object(parse_spec(f"{tmp_path}/json.py:VALUE")) == "mine"
    import json

    assert hasattr(json, "dumps")


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("fixtures/no_such_file.py:f", "no such file"),
        ("fixtures/broken_import.py:group_norm", "ModuleNotFoundError: No module named 'normcheck_no_such_dependency'"),
        ("fixtures/broken_impls.py:missing", "has no attribute 'missing'"),
        ("no_such_package_xyz.layers:f", "no module named 'no_such_package_xyz'"),
    ],
)
def test_load_errors(spec, needle):
    with pytest.raises(LoadError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        load_object(parse_spec(spec))


def test_syntax_error_names_the_line(tmp_path):
    (tmp_path / "bad.py").write_text("x = 1\ndef f(:\n")
    with pytest.raises(LoadError, match=r"SyntaxError: .* \(line 2\)"):
        load_object(parse_spec(f"{tmp_path}/bad.py:f"))


def test_form_detection():
    assert detect_form(torch.nn.GroupNorm, None, None, "GN") == "torch_module"
    assert detect_form(lambda x: x, "torch", None, "f") == "torch_function"
    assert detect_form(lambda x: x, "jax", None, "f") == "jax_function"
    with pytest.raises(SpecError, match="--framework torch"):
        detect_form(lambda x: x, None, None, "f")
    with pytest.raises(SpecError, match="torch class"):
        detect_form(torch.nn.GroupNorm, "jax", None, "GN")
    with pytest.raises(FormError, match="not a subclass"):
        detect_form(dict, None, None, "dict")
    with pytest.raises(FormError, match="give its class"):
        detect_form(torch.nn.GroupNorm(2, 4), None, None, "gn")
    with pytest.raises(FormError, match="not a function or a class"):
        detect_form(3, "torch", None, "NOT_CALLABLE")


def test_guess_op():
    assert guess_op("MyGroupNorm") == "gn"
    assert guess_op("layernorm_forward") == "ln"
    assert guess_op("spatial_batchnorm_forward") == "bn"
    assert guess_op("FusedNorm") is None


def test_guess_op_reads_the_fused_and_adaptive_names_as_themselves():
    assert guess_op("add_layernorm_forward") == guess_op("fused_add_layer_norm") == "add_ln"
    assert guess_op("FusedAddRMSNorm") == "add_rms"
    assert guess_op("AdaLayerNorm") == guess_op("adaln_forward") == guess_op("adaptive_layer_norm") == "adaln"
    # a model's layers are probed as the plain norms they contain
    assert guess_op("FusedAddRMSNorm", plain=True) == "rms"
    assert guess_op("AdaLayerNorm", plain=True) == "ln"


def _error_rows(report):
    return [r for r in report.results if r.status == ERROR]


def test_unloadable_code_is_one_error_row_per_op():
    report = normcheck.check("gn", "fixtures/broken_import.py:group_norm", **SMALL)
    assert [(r.check, r.status, r.case.impl) for r in report.results] == [
        (RUN, ERROR, "fixtures/broken_import.py:group_norm")
    ]
    assert "cannot import fixtures/broken_import.py" in report.results[0].message
    assert not report.ok


@pytest.mark.parametrize(
    ("name", "check", "needle"),
    [
        ("raises", RUN, "ValueError: weights are not initialised"),
        ("wrong_shape", RUN, "Mismatch in shape"),  # torch's backward notices first
        ("wrong_dtype", "forward", "returned dtype float64 for float32 input"),
        ("too_few_parameters", RUN, "TypeError"),
    ],
)
def test_contract_violations_are_error_rows(name, check, needle):
    report = normcheck.check("gn", f"{BROKEN}:{name}", **SMALL)
    errors = _error_rows(report)
    assert errors, [r.as_dict() for r in report.results]
    assert any(r.check == check and needle in r.message for r in errors), [r.message for r in errors]


def test_nan_output_fails_and_says_so():
    report = normcheck.check("gn", f"{BROKEN}:returns_nan", **SMALL)
    fails = [r for r in report.results if r.check == "forward"]
    assert fails and all(r.status == "fail" for r in fails)
    assert all("NaN or inf where finite values are expected" in r.message for r in fails)


@pytest.mark.slow
def test_a_hanging_case_times_out_and_later_ones_are_not_run(real_workers):
    start = time.perf_counter()
    report = normcheck.check("gn", f"{BROKEN}:hangs", **{**SMALL, "kinds": "normal,constant,tiny_scale"}, timeout=0.5)
    elapsed = time.perf_counter() - start
    messages = [r.message for r in report.results]
    # two call styles: each times out twice, then its remaining case is not run
    assert sum("timed out after 0.5 s" in m for m in messages) == 4, messages
    assert sum(m.startswith("not run: 2 earlier cases timed out") for m in messages) == 2, messages
    assert elapsed < 30


def test_non_callable_is_an_error_row():
    report = normcheck.check("gn", f"{BROKEN}:NOT_CALLABLE", **SMALL)
    assert [r.status for r in report.results] == [ERROR]
    assert "not a function or a class" in report.results[0].message


def test_usage_errors():
    with pytest.raises(UsageError, match="cannot tell which op"):
        normcheck.check(None, f"{BROKEN}:raises", framework="torch")
    with pytest.raises(UsageError, match="--framework torch"):
        normcheck.check("gn", "fixtures/torch_functional.py:group_norm")
    with pytest.raises(UsageError, match="give --backward"):
        normcheck.check("bn", "fixtures/torch_functional.py:batch_norm", style="cs231n")
    with pytest.raises(UsageError, match="malformed"):
        normcheck.check("gn", "nocolon")


def test_correct_function_passes_both_call_styles():
    report = normcheck.check("gn", "fixtures/torch_functional.py:group_norm", **SMALL)
    assert report.ok
    impls = {r.case.impl for r in report.results}
    assert impls == {"group_norm", "group_norm (defaults)"}
    assert all(r.status == PASS for r in report.results)
