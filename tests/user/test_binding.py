"""normcheck.user.binding: the name table, the binder, and a PyTorch function of a signature that
is not torch.nn.functional's, checked end to end by its parameters' names."""

from __future__ import annotations

from pathlib import Path

import pytest

from normcheck.errors import UsageError
from normcheck.user.binding import (
    BindingError,
    bind,
    creates_variables,
    role_of,
    shape_value,
    takes_functional_signature,
)


def ln(hidden_states, gamma, beta, variance_epsilon): ...


def gn(x, gamma, beta, G, eps=1e-5): ...


def gn_f(input, num_groups, weight=None, bias=None, eps=1e-5): ...


def gn_positional(x, G, /, gamma=None, beta=None, *, epsilon=1e-5): ...


def unbindable(x, gamma, beta, num_channels_per_group, eps=1e-5): ...


def two_weights(x, gamma, weight, beta, G): ...


def tf1(x, G):
    import tensorflow as tf

    return tf.compat.v1.get_variable("gamma", [1])


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("hidden_states", "input"),
        ("G", "groups"),
        ("g", "weight"),
        ("Training", "training"),
        ("IS_TRAINING", "training"),
        ("variance_epsilon", "eps"),
        ("moving_variance", "running_var"),
        ("axes", "shape"),
        ("dropout", None),
    ],
)
def test_names_take_their_roles(name, role):
    assert role_of(name) == role


def test_a_signature_binds_by_name():
    b = bind(gn, "gn", "gn")
    assert [(p.name, p.role, p.required) for p in b.params] == [
        ("x", "input", True),
        ("gamma", "weight", True),
        ("beta", "bias", True),
        ("G", "groups", True),
        ("eps", "eps", False),
    ]
    assert b.declared("eps") == 1e-5
    args, kwargs = b.arguments({"input": 1, "weight": 2, "bias": 3, "groups": 4})
    assert (args, kwargs) == ([], {"x": 1, "gamma": 2, "beta": 3, "G": 4})


def test_positional_only_parameters_go_positionally():
    b = bind(gn_positional, "gn", "gn_positional")
    args, kwargs = b.arguments({"input": "x", "groups": 2, "eps": 0.1})
    assert (args, kwargs) == (["x", 2], {"epsilon": 0.1})


def test_the_functional_signature_is_recognised():
    assert takes_functional_signature(gn_f, "gn")
    assert not takes_functional_signature(gn, "gn")
    assert not takes_functional_signature(ln, "ln")
    assert takes_functional_signature(lambda *a, **k: None, "gn")  # cannot be bound by name


def test_an_unbindable_signature_names_what_is_missing_and_the_accepted_names():
    with pytest.raises(BindingError) as e:
        bind(unbindable, "gn", "unbindable")
    msg = str(e.value)
    assert "\n" not in msg
    assert "'num_channels_per_group' match no role" in msg
    assert "no parameter for the groups" in msg
    assert "groups: groups, G, num_groups, group, num_group" in msg


def test_two_parameters_of_one_role_are_refused():
    with pytest.raises(BindingError, match="'gamma' and 'weight' both name the weight"):
        bind(two_weights, "gn", "two_weights")


def test_a_role_the_op_has_not_is_unbindable_when_required():
    with pytest.raises(BindingError, match="'G' match no role"):
        bind(gn, "ln", "gn")


def test_variable_makers_are_found_in_the_code():
    assert creates_variables(tf1) == "get_variable"
    assert creates_variables(gn) is None


def test_shape_values_follow_the_parameter_name_and_the_layout():
    assert shape_value("normalized_shape", "ln", (3, 4), "nchw") == (3, 4)
    assert shape_value("axis", "ln", (3, 4), "nchw") == (-2, -1)
    assert shape_value("axis", "ln", (4,), "nchw") == -1
    assert shape_value("axes", "ln", (4,), "nchw") == [-1]
    assert shape_value("axis", "gn", (), "nhwc") == -1
    assert shape_value("axis", "bn", (), "nchw") == 1


# -- end to end, PyTorch ---------------------------------------------------------------------

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def _torch():
    from _require import require

    require("torch")


def bad_rows(report) -> list[tuple]:
    return [
        (r["shape"], r["dtype"], r["input"], r["check"], r["status"], r["message"])
        for r in report.records
        if not (r["status"] == "pass" or (r["status"] == "skip" and r["message"]))
    ]


def assert_diagnosed(report, hypothesis: str) -> None:
    failing = [r for r in report.records if r["status"] == "fail"]
    assert failing and not [r for r in report.records if r["status"] == "error"]
    assert hypothesis in {r["diagnosis"]["hypothesis"] for r in failing if r["diagnosis"]}


def test_a_torch_function_with_a_bert_style_signature_passes():
    _torch()
    from normcheck.api import check

    report = check(
        "ln",
        f"{FIXTURES / 'named_functions.py'}:ln",
        framework="torch",
        dtypes=("float32", "float16"),
        kinds=("normal", "tiny_scale"),
    )
    assert bad_rows(report) == []
    passed = {r["check"] for r in report.records if r["status"] == "pass"}
    assert passed == {"forward", "grad_input", "grad_weight", "grad_bias"}
    skipped = {r["message"] for r in report.records if r["status"] == "skip"}
    assert skipped == {"ln takes no normalized_shape/axis parameter: checked over the last axis only"}


def test_a_torch_bug_is_diagnosed_through_name_binding():
    _torch()
    from normcheck.api import check

    report = check(
        "ln",
        f"{FIXTURES / 'named_functions.py'}:ln_eps_outside_sqrt",
        framework="torch",
        dtypes="float32",
        kinds="tiny_scale",
        shapes=[(2, 3, 16)],
        normalized_ndim=1,
    )
    assert_diagnosed(report, "eps_outside_sqrt")


def test_a_channels_last_torch_function_passes_with_layout_nhwc():
    _torch()
    from normcheck.api import check

    report = check(
        "gn",
        f"{FIXTURES / 'named_functions.py'}:group_norm_nhwc",
        framework="torch",
        layout="nhwc",
        dtypes=("float32", "bfloat16"),
        kinds="normal",
    )
    assert bad_rows(report) == []
    assert {r["status"] for r in report.records} == {"pass"}


def test_an_unbindable_torch_function_is_a_usage_error():
    _torch()
    from normcheck.api import check

    with pytest.raises(UsageError, match=r"cannot call ln_dropout\(.*'dropout_rate' match no role"):
        check("ln", f"{FIXTURES / 'named_functions.py'}:ln_dropout", framework="torch")


def test_broadcast_parameters_reach_the_function_in_the_layout_shape():
    _torch()
    import torch

    from normcheck.api import check

    shapes: list[tuple[int, ...]] = []

    def group_norm_nhwc(x, G, gamma, beta, eps=1e-5):
        from fixtures.named_functions import group_norm_nhwc as correct

        shapes.append(tuple(gamma.shape))
        assert isinstance(gamma, torch.Tensor)
        return correct(x, G, gamma, beta, eps)

    report = check(
        "gn",
        group_norm_nhwc,
        framework="torch",
        layout="nhwc",
        param_shape="broadcast",
        dtypes="float32",
        kinds="normal",
        shapes=[(2, 6, 3, 3)],
        groups=[2],
    )
    assert {r["status"] for r in report.records} == {"pass"}
    assert set(shapes) == {(1, 1, 1, 6)}


def test_layout_without_impl_is_a_usage_error():
    from normcheck.api import check

    with pytest.raises(UsageError, match="give --impl too"):
        check("gn", layout="nhwc")
