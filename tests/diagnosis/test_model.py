"""The mistake model equals the reference with no mistake switched on, and each hypothesis,
given an implementation that makes exactly that mistake, names it with evidence."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from normcheck.diagnosis import HYPOTHESES, diagnose
from normcheck.diagnosis.model import Variant, interleave_order, outputs
from normcheck.frameworks.base import RunOutput
from normcheck.ops import OPS, OpParams
from normcheck.reference import reference
from normcheck.verify.inputs import make_problem
from normcheck.verify.judge import check_one
from normcheck.verify.plan import Options
from normcheck.verify.records import Case
from normcheck.verify.tolerance import tolerance_for, witness_errors

CASES = [
    ("gn", (2, 6, 5, 5), OpParams(groups=3)),
    ("gn", (5, 4), OpParams(groups=2)),
    ("ln", (3, 4, 5), OpParams(normalized_ndim=2)),
    ("in", (2, 3, 4, 4), OpParams()),
    ("rms", (4, 16), OpParams(normalized_ndim=1)),
    ("bn", (4, 3, 5), OpParams(mode="train", running_stats=True)),
    ("bn", (4, 3, 5), OpParams(mode="eval", running_stats=True)),
]


def _problem(op, shape, params, kind="normal", dtype="float64"):
    return make_problem(op, shape, params, dtype, kind, eps=1e-5, momentum=0.1)


@pytest.mark.parametrize(("op", "shape", "params"), CASES)
@pytest.mark.parametrize("kind", ["normal", "tiny_scale", "constant"])
def test_no_mistake_is_the_reference(op, shape, params, kind):
    p = _problem(op, shape, params, kind)
    want = reference(p)
    running = (want["running_mean"], want["running_var"]) if "running_mean" in want else None
    got = outputs(p, Variant(), running)
    for check, value in got.items():
        np.testing.assert_allclose(value, want[check], rtol=1e-10, atol=1e-10, err_msg=check)


def test_interleave_order_makes_c_mod_g_contiguous():
    order = interleave_order(6, 3)
    assert [c % 3 for c in order] == [0, 0, 1, 1, 2, 2]


def test_finite_differences_agree_with_the_model_gradient_under_mistakes():
    p = _problem("gn", (2, 6, 3), OpParams(groups=3))
    for variant in (
        Variant(correction=True),
        Variant(eps_outside=True),
        Variant(interleaved=True),
        Variant(affine="order"),
        Variant(affine="swapped"),
        Variant(axes=(0, 2, 3)),
    ):
        base = outputs(p, variant)
        h = 1e-6
        x = p.x.copy()
        i = (1, 2, 0)
        x[i] += h
        up = outputs(replace(p, x=x), variant)["forward"]
        x[i] -= 2 * h
        down = outputs(replace(p, x=x), variant)["forward"]
        numeric = float(((up - down) * p.dy).sum() / (2 * h))
        assert abs(numeric - base["grad_input"][i]) < 1e-6, variant


def _diagnosed(p, got_values):
    """Run check_one on every output as the engine does, then diagnose the case."""
    expected = reference(p)
    errs = witness_errors(p, expected)
    case = Case(p.op, "synthetic", "impl", p.shape, p.params, p.dtype, p.kind)
    opts = Options(ops=(p.op,), dtypes=(p.dtype,))
    out = RunOutput()
    for check, value in got_values.items():
        out.add(check, value, p.dtype)
    rows = [check_one(case, c, out.values.get(c), p.dtype, want, errs[c], opts) for c, want in expected.items()]
    return rows, diagnose(p, expected, out, rows)


MISTAKES = [
    ("unbiased_variance", "gn", Variant(correction=True), "normal"),
    ("eps_outside_sqrt", "gn", Variant(eps_outside=True), "tiny_scale"),
    ("eps_missing", "gn", Variant(eps=0.0), "constant"),
    ("eps_value", "gn", Variant(eps=1e-3), "tiny_scale"),
    ("groups_interleaved", "gn", Variant(interleaved=True), "normal"),
    ("axes_batch_included", "gn", Variant(axes=(0, 2, 3, 4)), "normal"),
    ("axes_channels_included", "gn", Variant(axes=(1, 2, 3, 4)), "normal"),
    ("affine_order", "gn", Variant(affine="order"), "normal"),
    ("weight_bias_swapped", "gn", Variant(affine="swapped"), "normal"),
    ("grad_cut_mean", "gn", Variant(cut="mean"), "normal"),
    ("grad_cut_variance", "gn", Variant(cut="variance"), "normal"),
    ("grad_cut_stats", "gn", Variant(cut="both"), "normal"),
    ("mean_not_subtracted", "ln", Variant(center=False), "normal"),
]


@pytest.mark.parametrize(("hypothesis", "op", "variant", "kind"), MISTAKES)
def test_each_modelled_mistake_is_named(hypothesis, op, variant, kind):
    params = {"gn": OpParams(groups=2), "ln": OpParams(normalized_ndim=1)}[op]
    shape = {"gn": (2, 4, 3, 5), "ln": (4, 6)}[op]
    p = _problem(op, shape, params, kind)
    rows, found = _diagnosed(p, outputs(p, variant))
    failing = [r.check for r in rows if r.status == "fail"]
    assert failing
    assert {found[c].hypothesis for c in failing} == {hypothesis}, {c: found[c].summary for c in failing}
    assert all("->" in found[c].evidence for c in failing)


@pytest.mark.parametrize(
    ("hypothesis", "change"),
    [("momentum_inverted", {"momentum": 0.9}), ("running_var_biased", {"unbiased_running_var": False})],
)
def test_running_statistics_mistakes_are_named(hypothesis, change):
    p = _problem("bn", (4, 3, 5), OpParams(mode="train", running_stats=True))
    rows, found = _diagnosed(p, reference(replace(p, **change)))
    failing = [r.check for r in rows if r.status == "fail"]
    assert "running_mean" in failing or "running_var" in failing
    assert {found[c].hypothesis for c in failing} == {hypothesis}


def test_eval_with_batch_statistics_is_named():
    p = _problem("bn", (4, 3, 5), OpParams(mode="eval", running_stats=True))
    as_train = reference(replace(p, params=replace(p.params, mode="train")))
    got = {**as_train, "running_mean": reference(p)["running_mean"], "running_var": reference(p)["running_var"]}
    _, found = _diagnosed(p, got)
    assert {d.hypothesis for d in found.values()} == {"eval_batch_stats"}


def test_an_unmodelled_error_is_unknown_and_names_no_cause():
    p = _problem("gn", (2, 4, 3, 5), OpParams(groups=2))
    got = dict(reference(p))
    got["forward"] = got["forward"] + 0.01 * np.sin(np.arange(got["forward"].size)).reshape(p.shape)
    _, found = _diagnosed(p, got)
    assert found["forward"].hypothesis is None
    assert found["forward"].cause == "unknown"
    assert "none of the" in found["forward"].evidence


def test_half_accumulation_is_named_on_half_range_data():
    p = _problem("ln", (4, 64), OpParams(normalized_ndim=1), kind="half_range", dtype="float16")
    with np.errstate(all="ignore"):
        got = {k: np.asarray(v, dtype=np.float64) for k, v in reference(p, np.float16).items()}
    _, found = _diagnosed(p, got)
    assert found and {d.hypothesis for d in found.values()} == {"half_accumulation"}


def test_every_hypothesis_has_a_unique_id():
    ids = [h.id for h in HYPOTHESES]
    assert len(ids) == len(set(ids))


def test_tolerance_is_the_checks_own():
    assert tolerance_for("float32", 0.0).atol == 1e-5
    assert OPS["gn"].normalization((2, 4, 3), OpParams(groups=2)).count == 6


def test_interleaved_groups_with_per_group_affine_take_the_kth_value_for_the_kth_group():
    """ONNX GroupNormalization-18 holds one weight a group: grouping channel c with c % G gives
    group k the k-th value, as per-channel weights w[c % G] would."""
    p = make_problem("gn", (2, 6, 5, 5), OpParams(groups=3, group_affine=True), "float32", "normal", eps=1e-5)
    per_group = outputs(p, Variant(interleaved=True))
    channel_group = np.arange(6) % 3
    expanded = replace(p, params=OpParams(groups=3), weight=p.weight[channel_group], bias=p.bias[channel_group])
    per_channel = outputs(expanded, Variant(interleaved=True))
    for check in ("forward", "grad_input"):
        np.testing.assert_allclose(per_group[check], per_channel[check], rtol=0, atol=1e-12)
    summed = np.zeros(3)
    np.add.at(summed, channel_group, per_channel["grad_weight"])
    np.testing.assert_allclose(per_group["grad_weight"], summed, rtol=1e-12, atol=1e-12)
