"""The tf_function form: raw TensorFlow functions (eager or tf.function) called by their
parameters' names on channels-last tensors, from fixtures/tf_functions.py, through the Python API."""

from __future__ import annotations

import pytest
from _forms import ALL_DTYPES, FIXTURES, assert_diagnosed, bad_rows, by_style, spec
from _require import require

require("tensorflow")

from normcheck.api import check
from normcheck.errors import UsageError
from normcheck.user import FORMS

FILE = FIXTURES / "tf_functions.py"
GN = {"shapes": [(2, 6, 4, 4)], "groups": [3]}


def fn(name: str) -> str:
    return spec(FILE, name)


def test_the_form_is_a_tensorflow_function_under_tensorflow_conventions():
    assert FORMS["tf_function"].framework == "tensorflow"
    assert FORMS["tf_function"].conventions_of == "tensorflow"


@pytest.mark.parametrize("name", ["group_norm", "group_norm_compiled"])
def test_the_founding_text_group_norm_passes_in_every_dtype(name):
    report = check("gn", fn(name), framework="tensorflow", dtypes=ALL_DTYPES, kinds=("normal", "large_mean"), **GN)
    assert bad_rows(report) == []
    assert by_style(report)[False] and by_style(report)[True]
    assert {r["dtype"] for r in report.records if r["status"] == "pass"} == set(ALL_DTYPES)
    assert {r["check"] for r in report.records if r["status"] == "pass"} == {
        "forward",
        "grad_input",
        "grad_weight",
        "grad_bias",
    }
    assert {r["layout"] for r in report.records} == {"channels_last"}


def test_the_default_grid_passes_in_the_default_dtypes():
    report = check("gn", fn("group_norm"), framework="tensorflow", kinds="normal")
    assert bad_rows(report) == []
    assert {r["dtype"] for r in report.records} == set(ALL_DTYPES)


def test_layout_nchw_is_refused_by_a_channels_last_function():
    # the same function given channels-first tensors normalizes the wrong axes: it must not pass
    report = check(
        "gn", fn("group_norm"), framework="tensorflow", layout="nchw", dtypes="float32", kinds="normal", **GN
    )
    assert {r["layout"] for r in report.records} == {"contiguous"}
    assert not report.ok


def test_channels_grouped_in_the_wrong_order_are_diagnosed():
    report = check("gn", fn("group_norm_interleaved"), framework="tensorflow", dtypes="float32", kinds="normal", **GN)
    assert_diagnosed(report, "groups_interleaved")
    assert any(
        "channels grouped in the wrong order" in (r["diagnosis"] or {}).get("cause", "")
        or "channels grouped in the wrong order" in str(r["diagnosis"])
        for r in report.records
        if r["status"] == "fail"
    )


def test_a_tf1_function_with_get_variable_is_reported_as_such():
    with pytest.raises(UsageError) as e:
        check("gn", fn("group_norm_tf1"), framework="tensorflow", dtypes="float32", kinds="normal", **GN)
    msg = str(e.value)
    assert "group_norm_tf1 creates its own variables (it calls get_variable)" in msg
    assert "keras.layers.Layer subclass" in msg and "make gamma and beta parameters" in msg


def test_variables_created_while_running_are_an_error_row():
    report = check(
        "gn", fn("group_norm_makes_variables"), framework="tensorflow", dtypes="float32", kinds="normal", **GN
    )
    errors = [r["message"] for r in report.records if r["status"] == "error"]
    assert errors and all("creates its own variables (tf.Variable" in m for m in errors)
    assert not [r for r in report.records if r["status"] == "pass"]


def test_an_unbindable_signature_is_one_usage_line():
    with pytest.raises(UsageError) as e:
        check("gn", fn("group_norm_unbindable"), framework="tensorflow", **GN)
    msg = str(e.value)
    assert "\n" not in msg
    assert "'num_channels_per_group' match no role; no parameter for the groups" in msg
    assert "groups: groups, G, num_groups, group, num_group" in msg


def test_a_layer_norm_over_axes_passes():
    report = check(
        "ln",
        fn("layer_norm"),
        framework="tensorflow",
        dtypes=("float32", "float16"),
        kinds="normal",
        shapes=[(2, 3, 5, 7)],
        normalized_ndim=[1, 3],
    )
    assert bad_rows(report) == []
    assert {r["status"] for r in report.records} == {"pass"}
