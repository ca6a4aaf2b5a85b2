"""The JAX adapter (flax.linen): its verdicts end to end, its conventions measured against the installed
Flax, and the cause of each known issue reproduced."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import pytest
from _require import require

jax = require("jax")
require("jax", "flax")

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from normcheck.conventions import BIASED, CHANNELS_LAST, NEW, OLD, UNBIASED
from normcheck.dtypes import quantize
from normcheck.frameworks import load
from normcheck.frameworks.jax import adapter
from normcheck.frameworks.jax.facts import JAX
from normcheck.ops import OPS, OpParams
from normcheck.reference import reference
from normcheck.verify.inputs import make_problem
from normcheck.verify.local import check_case, run
from normcheck.verify.plan import Options, plan
from normcheck.verify.records import ERROR, FAIL, KNOWN, PASS, RUN, SKIP, Case
from normcheck.verify.tolerance import compare, tolerance_for, witness_errors

OP_NAMES = ("bn", "ln", "in", "gn", "rms")
GRADS = ("grad_input", "grad_weight", "grad_bias")
SAFE = {op: f"{adapter.MODULE_NAMES[op]}(use_fast_variance=False)" for op in adapter.HAS_FAST_VARIANCE}
# Few shapes: each (shape, params, dtype, layout, implementation) is one XLA compilation.
SHAPES = {
    "bn": ((2, 3, 5, 5),),
    "ln": ((2, 5, 33),),
    "in": ((2, 3, 4, 5),),
    "gn": ((2, 6, 5, 5), (5, 4)),
    "rms": ((2, 5, 33),),
}


@pytest.fixture(scope="module")
def fw():
    return load("jax")


def problem(fw, op, shape, params, dtype="float32", kind="normal"):
    s = fw.settings(op, dtype)
    return make_problem(
        op, shape, params, dtype, kind, eps=s.eps, momentum=s.momentum, unbiased_running_var=s.unbiased_running_var
    )


def bn(mode: str) -> OpParams:
    return OpParams(mode=mode, running_stats=True)


def impl_named(fw, op, name):
    return next(i for i in fw.implementations(op) if i.name == name)


def results_of(fw, op, dtypes, kinds, shapes=None, **kw):
    opts = Options(ops=(op,), dtypes=dtypes, kinds=kinds, shapes=shapes or SHAPES[op], groups=(2,), **kw)
    return list(run(plan(opts, [fw]), opts))


def tol_of(p, check):
    return tolerance_for(p.dtype, witness_errors(p, reference(p))[check])


# -- end to end ------------------------------------------------------------------------


@pytest.mark.parametrize("op", OP_NAMES)
def test_every_case_passes_or_is_explained(fw, op):
    results = results_of(fw, op, ("float32", "float64"), ("normal", "large_mean", "constant", "tiny_scale"))
    assert results
    for r in results:
        assert r.status in (PASS, SKIP, KNOWN), (r.case, r.check, r.message)
        if r.status == KNOWN:  # only the fragile default, never its safe variant
            assert r.case.impl == adapter.MODULE_NAMES[op] and fw.known_issue(r.case, r.check) is not None
            assert "use_fast_variance=False avoids it" in r.message
        if r.status == SKIP:
            assert (op, r.check, r.message) == ("in", RUN, "flax.linen.InstanceNorm keeps no running statistics")
    layouts = {r.case.layout for r in results}
    assert layouts == {
        "bn": {"contiguous", "channels_last"},
        "in": {"contiguous", "channels_last"},
        "gn": {"contiguous", "channels_last"},
    }.get(op, {"contiguous"})
    passed = {r.check for r in results if r.status == PASS}
    want = {"forward", "grad_input", "grad_weight"} | ({"grad_bias"} if op != "rms" else set())
    assert passed == want | ({"running_mean", "running_var"} if op == "bn" else set())
    known = {(r.case.dtype, r.case.kind) for r in results if r.status == KNOWN}
    if op == "rms":  # no mean, no one-pass variance
        assert not known
    else:  # the finding stays visible, in float64 too
        assert {("float32", "large_mean"), ("float64", "large_mean")} <= known


def test_half_precision(fw):
    kinds = ("normal", "constant")
    results = results_of(fw, "ln", ("float16", "bfloat16"), kinds, normalized_ndim=(1,))
    results += results_of(fw, "gn", ("float16", "bfloat16"), kinds, shapes=((5, 4),))
    results += results_of(fw, "bn", ("bfloat16",), kinds, shapes=((8, 5),))
    assert {r.status for r in results} == {PASS, KNOWN}
    known = {(r.case.impl, r.case.dtype, r.case.kind, r.check) for r in results if r.status == KNOWN}
    # the one-pass variance of a constant group, in the default only
    assert ("flax.linen.LayerNorm", "float16", "constant", "grad_input") in known
    assert not [k for k in known if k[0] == SAFE["ln"]]
    # gradients rounded in two parts: both variants of group norm, groups of two values
    for name in ("flax.linen.GroupNorm", SAFE["gn"]):
        for dtype in ("float16", "bfloat16"):
            assert (name, dtype, "normal", "grad_input") in known
    assert {r.check for r in results if r.status == PASS and r.case.op == "bn"} >= {"running_mean", "running_var"}


def test_outputs_in_the_case_dtype_and_shapes(fw):
    p = problem(fw, "bn", (8, 5), bn("train"), "bfloat16")
    out = fw.implementations("bn")[0].run(p, "contiguous", "cpu")
    assert set(out.values) == {"forward", *GRADS, "running_mean", "running_var"}
    # Flax keeps the running statistics in float32 whatever the parameters' dtype
    assert out.dtypes == {
        "forward": "bfloat16",
        "grad_input": "bfloat16",
        "grad_weight": "bfloat16",
        "grad_bias": "bfloat16",
        "running_mean": "float32",
        "running_var": "float32",
    }
    p = problem(fw, "ln", (2, 3, 7, 9), OpParams(normalized_ndim=2))
    out = fw.implementations("ln")[0].run(p, "contiguous", "cpu")
    assert out.values["grad_weight"].shape == out.values["grad_bias"].shape == (7, 9)
    assert out.values["forward"].shape == out.values["grad_input"].shape == p.shape
    p = problem(fw, "rms", (2, 6, 32), OpParams(normalized_ndim=1, affine=False))
    assert set(fw.implementations("rms")[0].run(p, "contiguous", "cpu").values) == {"forward", "grad_input"}


def test_float64_enables_x64_for_that_case_only(fw):
    p = problem(fw, "gn", (5, 4), OpParams(groups=2), "float64")
    impl = fw.implementations("gn")[0]
    assert not jax.config.jax_enable_x64
    assert impl.run(p, "contiguous", "cpu").dtypes["forward"] == "float64"
    assert not jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:  # a user's own x64 setting is left as it was
        assert impl.run(p, "contiguous", "cpu").dtypes["forward"] == "float64"
        assert jax.config.jax_enable_x64
    finally:
        jax.config.update("jax_enable_x64", False)


def test_layouts(fw):
    for op in OP_NAMES:
        for impl in fw.implementations(op):
            assert impl.layouts((5, 4)) == ("contiguous",)  # channels at axis 1 are also the last
            want = {
                "bn": ("contiguous", "channels_last"),
                "in": ("contiguous", "channels_last"),
                "gn": ("channels_last",),
            }.get(op, ("contiguous",))
            for shape in ((2, 3, 10), (2, 3, 4, 5), (2, 3, 2, 3, 4)):
                assert impl.layouts(shape) == want
    p = problem(fw, "gn", (2, 6, 5, 5), OpParams(groups=2))
    with pytest.raises(ValueError, match="cannot run contiguous"):
        fw.implementations("gn")[0].run(p, "contiguous", "cpu")


def test_the_module_is_told_where_the_channels_are(fw):
    for op, attr in (("bn", "axis"), ("in", "feature_axes")):
        impl = fw.implementations(op)[0]
        p = problem(fw, op, (2, 3, 4, 5), bn("train") if op == "bn" else OpParams())
        assert getattr(adapter.build(impl.config(p, "contiguous")), attr) == 1
        assert getattr(adapter.build(impl.config(p, "channels_last")), attr) == -1
    ln = adapter.build(
        fw.implementations("ln")[0].config(problem(fw, "ln", (2, 3, 4, 5), OpParams(normalized_ndim=2)), "contiguous")
    )
    assert ln.reduction_axes == ln.feature_axes == (2, 3)


def test_compiled_once_per_configuration(fw):
    impl = fw.implementations("gn")[0]
    before = adapter.compiled.cache_info()
    for kind in ("normal", "large_mean"):
        impl.run(problem(fw, "gn", (3, 8, 2), OpParams(groups=4), kind=kind), "channels_last", "cpu")
    after = adapter.compiled.cache_info()
    assert (after.misses, after.hits) == (before.misses + 1, before.hits + 1)
    impl.run(problem(fw, "gn", (3, 8, 2), OpParams(groups=2)), "channels_last", "cpu")
    assert adapter.compiled.cache_info().misses == before.misses + 2


def test_problem_is_left_unchanged(fw):
    p = problem(fw, "bn", (2, 3, 5, 5), bn("eval"))
    before = [a.copy() for a in (p.x, p.dy, p.weight, p.bias, p.running_mean, p.running_var, *p.steps)]
    for layout in ("contiguous", "channels_last"):
        fw.implementations("bn")[0].run(p, layout, "cpu")
    after = (p.x, p.dy, p.weight, p.bias, p.running_mean, p.running_var, *p.steps)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


def test_instance_norm_with_running_statistics_is_a_skip(fw):
    results = results_of(fw, "in", ("float32",), ("normal",))
    tracked = [r for r in results if r.case.params.running_stats]
    assert tracked and {(r.check, r.status) for r in tracked} == {(RUN, SKIP)}


def test_an_unimplemented_dtype_is_a_skip(fw, monkeypatch):
    class Missing:
        def run(self, *args):
            raise jax.errors.JaxRuntimeError("UNIMPLEMENTED: no bf16 reduce on this backend\ndetail")

    monkeypatch.setattr(adapter, "compiled", lambda cfg: Missing())
    shape, params = (5, 4), OpParams(groups=2)
    p = problem(fw, "gn", shape, params, "bfloat16")
    impl = fw.implementations("gn")[0]
    expected = reference(p)
    case = Case("gn", "jax", impl.name, shape, params, "bfloat16", "normal")
    for explicit, status in ((False, SKIP), (True, ERROR)):
        opts = Options(ops=("gn",), dtypes=("bfloat16",), explicit_dtypes=explicit)
        rows = list(check_case(case, impl, p, expected, witness_errors(p, expected), opts))
        assert [(r.check, r.status, r.message) for r in rows] == [
            (RUN, status, "bfloat16 not supported: UNIMPLEMENTED: no bf16 reduce on this backend")
        ]


def test_other_runtime_errors_are_not_unsupported(fw, monkeypatch):
    class Broken:
        def run(self, *args):
            raise jax.errors.JaxRuntimeError("INTERNAL: something else")

    monkeypatch.setattr(adapter, "compiled", lambda cfg: Broken())
    with pytest.raises(jax.errors.JaxRuntimeError):
        fw.implementations("gn")[0].run(problem(fw, "gn", (5, 4), OpParams(groups=2)), "contiguous", "cpu")


# -- running statistics, and a broken variant caught ------------------------------------------


def test_wrong_momentum_fails_running_statistics(fw):
    # PyTorch's meaning (the weight of the new batch) given unchanged where Flax wants the old value's weight
    broken = adapter.FlaxImplementation("bn", replace(JAX["bn"], momentum_weights=NEW))
    opts = Options(ops=("bn",), dtypes=("float32",), kinds=("normal",), shapes=((2, 3, 5, 5),))
    units = plan(opts, [fw])
    for unit in units:
        unit.runs += [(replace(c, impl="broken"), broken) for c, i in unit.runs if i.name == "flax.linen.BatchNorm"]
    statuses = {(r.case.impl, r.case.params.mode, r.case.layout, r.check): r.status for r in run(units, opts)}
    for mode in ("train", "eval"):
        for layout in ("contiguous", "channels_last"):
            for check in ("forward", "running_mean", "running_var"):
                assert statuses[("flax.linen.BatchNorm", mode, layout, check)] == PASS
                # training normalizes with the batch statistics: only its forward is right
                want = PASS if (mode, check) == ("train", "forward") else FAIL
                assert statuses[("broken", mode, layout, check)] == want


# -- conventions, against the installed Flax ----------------------------------------------------

MODULES = {"bn": nn.BatchNorm, "ln": nn.LayerNorm, "in": nn.InstanceNorm, "gn": nn.GroupNorm, "rms": nn.RMSNorm}


def _default(cls, name):
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


@pytest.mark.parametrize("op", OP_NAMES)
def test_declared_defaults_match_flax(op):
    conv, cls = JAX[op], MODULES[op]
    assert conv.api == adapter.MODULE_NAMES[op] == f"flax.linen.{cls.__name__}"
    assert _default(cls, "epsilon") == conv.eps
    assert conv.layout == CHANNELS_LAST
    feature_axis = {"bn": "axis", "gn": None}.get(op, "feature_axes")
    if feature_axis:
        assert _default(cls, feature_axis) == -1
    assert _default(cls, "use_scale") is True and conv.affine.endswith("on")
    fields = {f.name for f in dataclasses.fields(cls)}
    assert ("use_bias" in fields) == ("scale only" not in conv.affine)
    assert _default(cls, "force_float32_reductions") is True and "float32" in conv.notes
    assert _default(cls, "use_fast_variance") is True  # RMSNorm has it too, unused (see below)
    assert conv.fragile == (op != "rms")
    if conv.fragile:
        assert conv.safe_setting == adapter.SAFE_SETTING == "use_fast_variance=False"
    if op == "gn":
        assert _default(cls, "num_groups") == conv.groups == 32
    else:
        assert conv.groups is None
    if op == "bn":
        assert _default(cls, "momentum") == conv.momentum == 0.99
    else:
        assert conv.momentum is None and conv.running_var is None


def test_batch_norm_semantics_measured():
    # one channel holding 0 and 2: batch mean 1, biased variance 1, Bessel-corrected 2
    conv = JAX["bn"]
    variables = {
        "params": {"scale": jnp.ones(1), "bias": jnp.zeros(1)},
        "batch_stats": {"mean": jnp.zeros(1), "var": jnp.ones(1)},
    }
    m = nn.BatchNorm(momentum=0.75, epsilon=0.0)
    y, updated = m.apply(variables, jnp.array([[0.0], [2.0]]), use_running_average=False, mutable=["batch_stats"])
    stats = updated["batch_stats"]
    # running = momentum * running + (1 - momentum) * batch: 0.25 (0.75 if momentum were the new weight)
    assert {0.25: OLD, 0.75: NEW}[float(stats["mean"][0])] == conv.momentum_weights
    # 0.75 * 1 + 0.25 * 1 with the biased variance, 0.75 + 0.25 * 2 with the unbiased one
    assert {1.0: BIASED, 1.25: UNBIASED}[float(stats["var"][0])] == conv.running_var
    np.testing.assert_array_equal(y[:, 0], [-1.0, 1.0])  # the batch normalized with its own statistics
    # half-precision parameters, float32 running statistics
    shapes = jax.eval_shape(
        lambda x: nn.BatchNorm(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16).init(jax.random.key(0), x, True),
        jax.ShapeDtypeStruct((2, 3), jnp.bfloat16),
    )
    assert shapes["batch_stats"]["mean"].dtype == jnp.float32 and shapes["params"]["scale"].dtype == jnp.bfloat16


def test_variance_is_one_pass_by_default_and_rms_norm_unaffected():
    # [1e4, 1e4 + 1]: variance 0.25, E[x^2] near 1e8 where float32's spacing is 8
    x = jnp.array([[1e4, 1e4 + 1]], jnp.float32)
    fast = nn.LayerNorm(use_scale=False, use_bias=False).apply({}, x)
    two_pass = nn.LayerNorm(use_scale=False, use_bias=False, use_fast_variance=False).apply({}, x)
    assert np.abs(np.asarray(fast)).max() > 100  # normalized by a variance 1e-5 instead of 0.25
    np.testing.assert_allclose(two_pass, [[-1.0, 1.0]], atol=1e-5)
    xr = jax.random.normal(jax.random.key(1), (4, 16)) + 100.0
    ys = [nn.RMSNorm(use_scale=False, use_fast_variance=f).apply({}, xr) for f in (True, False)]
    np.testing.assert_array_equal(ys[0], ys[1])


def test_statistics_in_float32_for_half_inputs():
    x = (jax.random.normal(jax.random.key(2), (8, 256)) + 3.0).astype(jnp.bfloat16)
    x64 = np.asarray(x, np.float64)
    want = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-6)

    def error(force_float32):
        ln = nn.LayerNorm(
            dtype=jnp.bfloat16,
            param_dtype=jnp.bfloat16,
            use_scale=False,
            use_bias=False,
            use_fast_variance=False,
            force_float32_reductions=force_float32,
        )
        return np.abs(np.asarray(ln.apply({}, x), np.float64) - want).max()

    assert error(True) < 0.5 * error(False)  # bfloat16 statistics lose more


def test_group_norm_takes_contiguous_groups_of_the_last_axis():
    x = jnp.arange(8.0).reshape(1, 8) ** 2
    y = nn.GroupNorm(num_groups=2, use_scale=False, use_bias=False, use_fast_variance=False).apply({}, x)
    v = np.arange(8.0).reshape(2, 4) ** 2
    want = (v - v.mean(1, keepdims=True)) / np.sqrt(v.var(1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(np.asarray(y).reshape(2, 4), want, rtol=1e-5)
    with pytest.raises(ValueError, match="must include the final dimension"):
        nn.GroupNorm(num_groups=1, reduction_axes=(1, 2)).init(jax.random.key(0), jnp.ones((1, 4, 3, 3)))


def test_default_eps_and_momentum(fw):
    assert fw.default_eps("bn", "float32") == 1e-5
    for op in ("ln", "in", "gn", "rms"):
        assert fw.default_eps(op, "float16") == 1e-6
    assert fw.default_momentum("bn") == pytest.approx(0.01)  # Flax's 0.99 in PyTorch's meaning
    impl = fw.implementations("bn")[0]
    assert impl.config(problem(fw, "bn", (8, 5), bn("train")), "contiguous").momentum == pytest.approx(0.99)


# -- known issues: each cause reproduced, each matched narrowly --------------------------------


def test_large_mean_errors_are_those_of_a_one_pass_variance(fw):
    p = problem(fw, "ln", (4, 16), OpParams(normalized_ndim=1), "float32", "large_mean")
    want, tol = reference(p)["forward"], tol_of(p, "forward")
    x = p.x.astype(np.float32)
    mean = x.mean(-1, keepdims=True)

    def normalized(var):
        y = (x - mean) / np.sqrt(np.maximum(var, 0) + np.float32(p.eps)) * p.weight.astype(np.float32)
        return quantize(y + p.bias.astype(np.float32), "float32")

    one_pass = compare(normalized((x * x).mean(-1, keepdims=True) - mean * mean), want, tol)
    two_pass = compare(normalized(((x - mean) ** 2).mean(-1, keepdims=True)), want, tol)
    default, safe = (
        compare(i.run(p, "contiguous", "cpu").values["forward"], want, tol) for i in fw.implementations("ln")
    )
    assert two_pass.mismatched == safe.mismatched == 0
    assert one_pass.mismatched > 0 and default.mismatched > 0
    assert 0.1 < default.max_abs_err / one_pass.max_abs_err < 10  # errors of the same size


def test_groups_of_two_values_match_a_one_pass_variance(fw):
    p = problem(fw, "gn", (5, 4), OpParams(groups=2), "float32", "normal")
    v = p.x.reshape(5, 2, 2).astype(np.float32)
    mean = v.mean(-1, keepdims=True)
    var = np.maximum((v * v).mean(-1, keepdims=True) - mean * mean, 0)
    y = (v - mean) / np.sqrt(var + np.float32(p.eps)) * p.weight.reshape(1, 2, 2) + p.bias.reshape(1, 2, 2)
    want, tol = reference(p)["forward"], tol_of(p, "forward")
    default, safe = (i.run(p, "contiguous", "cpu").values["forward"] for i in fw.implementations("gn"))
    assert compare(default, want, tol).mismatched > 0 and compare(safe, want, tol).mismatched == 0
    assert compare(default, quantize(y, "float32").reshape(5, 4), tol).mismatched == 0


def test_constant_group_variance_read_back_from_the_gradient(fw):
    p = problem(fw, "ln", (2, 5, 33), OpParams(normalized_ndim=1), "float32", "constant")
    assert (p.x[0, 0] == 1.5).all()  # the first row is the constant group
    default, safe = (i.run(p, "contiguous", "cpu").values["grad_input"] for i in fw.implementations("ln"))
    tol, want = tol_of(p, "grad_input"), reference(p)["grad_input"]
    assert compare(safe, want, tol).mismatched == 0 and compare(default, want, tol).mismatched > 0
    # in a constant group x - mean = 0, so dx = rstd * (g w - mean(g w)): rstd can be read back
    gw = p.dy[0, 0] * p.weight
    centered = gw - gw.mean()
    var_used = np.median(default[0, 0] / centered) ** -2.0 - p.eps
    # a rounding residual of E[x^2] - E[x]^2 (below one float32 ulp of 2.25), not a two-pass variance (0)
    assert 1e-8 < var_used < np.spacing(np.float32(2.25))
    np.testing.assert_allclose(default[0, 0], centered / np.sqrt(var_used + p.eps), rtol=1e-5)


def test_half_gradient_is_the_sum_of_two_rounded_parts(fw):
    # x enters Flax's graph through two float32 conversions; the vjp of each rounds its part to float16
    p = problem(fw, "gn", (5, 4), OpParams(groups=2), "float16", "normal")
    x, g = p.x.reshape(5, 2, 2).astype(np.float32), p.dy.reshape(5, 2, 2).astype(np.float32)
    w = p.weight.reshape(1, 2, 2).astype(np.float32)
    mean = x.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + np.float32(p.eps))
    xhat, gw = (x - mean) * rstd, g * w
    total = rstd * (gw - gw.mean(-1, keepdims=True) - xhat * (gw * xhat).mean(-1, keepdims=True))
    direct = gw * rstd  # through x - mean
    rounded_parts = quantize(quantize(direct, "float16") + quantize(total - direct, "float16"), "float16")
    tol, want = tol_of(p, "grad_input"), reference(p)["grad_input"]
    assert compare(quantize(total, "float16").reshape(5, 4), want, tol).mismatched == 0
    for impl in fw.implementations("gn"):
        got = impl.run(p, "contiguous", "cpu").values["grad_input"]
        assert compare(got, want, tol).mismatched > 0
        np.testing.assert_allclose(got, rounded_parts.reshape(5, 4), rtol=2e-3, atol=1e-3)


def _case(op, shape, params, dtype="float32", kind="normal", impl=None, device="cpu", layout="contiguous"):
    return Case(op, "jax", impl or adapter.MODULE_NAMES[op], shape, params, dtype, kind, layout, device)


def test_known_issues_are_matched_narrowly(fw):
    checks = ("forward", *GRADS, "running_mean", "running_var")
    for op in OP_NAMES:
        for shape, params in OPS[op].default_cases():
            for c in checks:
                assert fw.known_issue(_case(op, shape, params, "float64", "normal"), c) is None
                assert fw.known_issue(_case(op, shape, params, "float32", "tiny_scale"), c) is None
                if c != "grad_input":  # the double conversion of half input shows in any gradient
                    assert fw.known_issue(_case(op, shape, params, "bfloat16", "large_mean"), c) is None
                if op != "gn":
                    assert fw.known_issue(_case(op, shape, params), c) is None
    ln = ((4, 16), OpParams(normalized_ndim=1))
    assert "use_fast_variance=False avoids it" in fw.known_issue(_case("ln", *ln, kind="large_mean"), "forward").cause
    assert fw.known_issue(_case("ln", *ln, kind="large_mean", impl=SAFE["ln"]), "forward") is None
    assert fw.known_issue(_case("ln", *ln, kind="large_mean", device="cuda"), "forward") is None
    assert fw.known_issue(_case("ln", *ln, kind="large_mean"), "grad_bias") is None  # no statistics in it
    assert fw.known_issue(_case("rms", *ln, kind="large_mean"), "forward") is None
    bn_train = ((2, 3, 5, 5), bn("train"))
    assert fw.known_issue(_case("bn", *bn_train, kind="large_mean"), "running_var") is not None
    assert fw.known_issue(_case("bn", *bn_train, kind="large_mean"), "running_mean") is None
    assert fw.known_issue(_case("bn", *bn_train, "float64", "large_mean"), "running_var") is None
    assert fw.known_issue(_case("bn", *bn_train, "float16", "large_mean"), "running_var") is not None
    assert fw.known_issue(_case("bn", *bn_train, "float16", "large_mean", impl=SAFE["bn"]), "running_var") is None
    assert fw.known_issue(_case("ln", *ln, "bfloat16", "constant"), "grad_input") is not None
    assert fw.known_issue(_case("ln", *ln, "bfloat16", "constant"), "forward") is None
    assert fw.known_issue(_case("ln", *ln, "float64", "constant"), "grad_input") is None
    gn = ((5, 4), OpParams(groups=2))
    assert fw.known_issue(_case("gn", *gn), "forward") is not None
    assert fw.known_issue(_case("gn", *gn), "grad_weight") is not None  # groups of two, channels last
    assert fw.known_issue(_case("gn", *gn), "grad_bias") is None  # no statistics in it
    assert fw.known_issue(_case("gn", *gn, impl=SAFE["gn"]), "forward") is None
    # the two rounded gradient parts: both variants, half precision only
    for impl in (None, SAFE["gn"]):
        assert "rounded to the half dtype" in fw.known_issue(_case("gn", *gn, "float16", impl=impl), "grad_input").cause
        assert fw.known_issue(_case("gn", *gn, "float16", impl=impl), "forward") is None
    assert "rounded to the half dtype" in fw.known_issue(_case("ln", *ln, "float16"), "grad_input").cause
    assert fw.known_issue(_case("ln", *ln, "float16"), "grad_bias") is None


# -- devices -------------------------------------------------------------------------------


def _has_gpu() -> bool:
    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:
        return False


@pytest.mark.skipif(_has_gpu(), reason="checks the message given without a GPU")
def test_cuda_refused_without_a_gpu(fw):
    assert fw.device_problem("cpu") is None
    assert fw.device_problem("cuda") == "jax sees no GPU"
    assert fw.device_problem("cuda:1") == "jax sees no GPU"
    assert fw.device_problem("mps") == "unknown device 'mps'"


@pytest.mark.gpu
@pytest.mark.skipif(not _has_gpu(), reason="needs a GPU visible to jax")
def test_runs_on_the_gpu(fw):
    assert fw.device_problem("cuda") is None
    opts = Options(
        ops=("bn", "gn", "rms"), dtypes=("float32", "float64"), kinds=("normal", "tiny_scale"), device="cuda"
    )
    results = list(run(plan(opts, [fw]), opts))
    assert results and {r.case.device for r in results} == {"cuda"}
    assert not [(r.case, r.check, r.message) for r in results if r.status in (FAIL, ERROR)]


def test_float16_running_variance_under_pytorchs_momentum_fails_only_with_fast_variance(fw):
    """With momentum 0.1 (ten times Flax's) the one-pass variance's per-step error shows in the
    float16 running variance; the use_fast_variance=False variant still passes."""
    from normcheck.verify.local import run
    from normcheck.verify.plan import Options, plan

    opts = Options(ops=("bn",), dtypes=("float16",), shapes=((2, 3, 2, 3, 4),), kinds=("large_mean",), momentum=0.1)
    results = [r for r in run(plan(opts, [fw]), opts) if r.check == "running_var" and r.case.layout == "contiguous"]
    by_impl = {(r.case.impl, r.case.params.mode): r.status for r in results}
    assert by_impl[(SAFE["bn"], "eval")] == "pass"
    assert by_impl[("flax.linen.BatchNorm", "eval")] == "known"
