"""The PyTorch adapter, and normcheck's verdicts on hand-written correct and buggy PyTorch code."""

from __future__ import annotations

import pytest
from _require import require

torch = require("torch")

import numpy as np
from _wrap import TORCH, FixtureFramework, check, problem_for, tf, wrap

from normcheck.frameworks import load
from normcheck.frameworks.base import Implementation, RunOutput, Unsupported
from normcheck.frameworks.torch.adapter import FUNCTIONAL_NAMES, MODULE_NAMES, Bound, TorchImplementation
from normcheck.ops import OPS, OpParams
from normcheck.reference import reference
from normcheck.verify.inputs import KINDS
from normcheck.verify.local import check_case, run
from normcheck.verify.plan import Options, Unit, plan
from normcheck.verify.records import ERROR, FAIL, KNOWN, PASS, RUN, SKIP, Case
from normcheck.verify.tolerance import witness_errors

OP_NAMES = ("bn", "ln", "in", "gn", "rms")
GRADS = ("grad_input", "grad_weight", "grad_bias")

CORRECT = {
    "gn": tf.group_norm,
    "ln": tf.layer_norm,
    "bn": tf.batch_norm,
    "rms": tf.rms_norm,
    "in": tf.instance_norm,
}
BUGGY = {
    "gn": [
        tf.group_norm_unbiased_var,
        tf.group_norm_eps_outside_sqrt,
        tf.group_norm_one_pass,
        tf.group_norm_detached_stats,
        tf.group_norm_channels_interleaved,
    ],
    "ln": [tf.layer_norm_last_axis_only],
    "bn": [tf.batch_norm_momentum_inverted, tf.batch_norm_biased_running_var, tf.batch_norm_eval_uses_batch_stats],
    "rms": [tf.rms_norm_mean_subtracted],
    "in": [tf.instance_norm_as_batch_norm],
}
# Shapes the correct fixtures are checked on; Options.shapes gives each op's variants of them
# (group counts 1 / middle / C, train and eval, normalized dims 1 and ndim - 1, ...).
CORRECT_SHAPES = {
    "gn": ((2, 6, 5, 5), (3, 32, 7), (5, 4)),
    "ln": ((2, 5, 33), (2, 3, 7, 9)),
    "bn": ((8, 5), (2, 3, 5, 5), (1, 4, 3, 3)),
    "rms": ((2, 5, 33), (2, 3, 8, 8)),
    "in": ((2, 3, 10), (3, 4, 5, 5)),
}

G2 = OpParams(groups=2)
GN_SHAPE = (2, 6, 5, 5)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tensors here are tiny: extra threads only contend with each other on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def bn(mode: str) -> OpParams:
    return OpParams(mode=mode, running_stats=True)


def statuses(results) -> dict[str, str]:
    return {check: r.status for check, r in results.items()}


# -- the correct fixtures pass -------------------------------------------------------


def _acceptable(r) -> bool:
    """A correct implementation passes every check; the only exception is a float16 running
    variance of +-6e4 data, which float16 cannot hold, so the engine skips it."""
    if r.status == PASS:
        return True
    return (
        r.status == SKIP
        and r.case.dtype == "float16"
        and r.case.kind == "half_range"
        and r.check in ("running_var", RUN)
        and ("float16's largest" in r.message)
    )


@pytest.mark.parametrize("op", OP_NAMES)
def test_correct_fixture_passes_every_check(op):
    fw = FixtureFramework({op: [CORRECT[op]]})
    opts = Options(ops=(op,), dtypes=("float32", "float64", "float16"), shapes=CORRECT_SHAPES[op])
    units = plan(opts, [fw])
    assert {u.kind for u in units} == set(KINDS)
    results = list(run(units, opts))
    checked = {(r.case.shape, r.case.params, r.case.dtype, r.case.kind, r.case.layout) for r in results}
    assert len(checked) == sum(len(u.runs) for u in units) >= 5 * 3 * len(CORRECT_SHAPES[op])
    bad = [
        (r.case.shape, r.case.params.label(), r.case.dtype, r.case.kind, r.case.layout, r.check, r.message)
        for r in results
        if not _acceptable(r)
    ]
    assert bad == []
    passed = {r.check for r in results if r.status == PASS}
    want = {"forward", "grad_input"} | ({"grad_weight"} if op == "rms" else {"grad_weight", "grad_bias"})
    if op in ("bn", "in"):
        want |= {"running_mean", "running_var"}
    assert passed == want


@pytest.mark.parametrize("op", OP_NAMES)
def test_correct_fixture_passes_in_bfloat16(op):
    shape, params = OPS[op].default_cases()[0]
    for kind in ("normal", "large_mean", "constant"):
        assert set(statuses(check(wrap(op, CORRECT[op]), shape, params, "bfloat16", kind)).values()) == {PASS}


def test_correct_bfloat16_running_mean_passes():
    # Exact batch means with one bfloat16 rounding per step give 2.0e-4 where the reference is -6.8e-5: an error
    # of 2.7e-4. The witness keeps its running statistics in the dtype between steps, so it allows for that.
    params = bn("eval")
    r = check(wrap("bn", tf.batch_norm), (1, 4, 3, 3), params, "bfloat16", "normal", seed=1)
    assert r["running_mean"].status == PASS, r["running_mean"].message


def test_correct_fixtures_compute_half_inputs_in_float32():
    # a float16 sum of 4096 values of 60 overflows; float32 accumulation does not
    x = torch.full((2, 4, 32, 32), 60.0, dtype=torch.float16)
    x[:, :, 0, 0] = 0.0
    for y in (tf.group_norm(x, 2), tf.layer_norm(x, (4, 32, 32)), tf.rms_norm(x, (32, 32)), tf.instance_norm(x)):
        assert y.dtype == torch.float16
        assert torch.isfinite(y).all()


# -- the buggy fixtures fail, on the checks their bug touches --------------------------


def test_unbiased_variance_fails_forward_on_normal_data():
    r = check(wrap("gn", tf.group_norm_unbiased_var), GN_SHAPE, G2, "float32", "normal")
    assert r["forward"].status == FAIL
    assert r["grad_bias"].status == PASS  # dy summed: no statistics involved


def test_eps_outside_sqrt_fails_on_tiny_scale():
    impl = wrap("gn", tf.group_norm_eps_outside_sqrt)
    for dtype in ("float32", "float64"):
        r = check(impl, GN_SHAPE, G2, dtype, "tiny_scale")
        assert r["forward"].status == FAIL
        assert r["grad_input"].status == FAIL
        assert r["forward"].comparison.max_rel_err > 0.1  # sqrt(var) ~ eps: off by a large factor


def test_one_pass_variance_fails_on_large_mean_only():
    impl = wrap("gn", tf.group_norm_one_pass)
    for shape, params in ((GN_SHAPE, G2), ((4, 64, 8, 8), OpParams(groups=32))):
        assert set(statuses(check(impl, shape, params, "float32", "normal")).values()) == {PASS}
        r = check(impl, shape, params, "float32", "large_mean")
        assert r["forward"].status == FAIL
        assert r["grad_input"].status == FAIL


def test_detached_statistics_pass_forward_and_fail_grad_input():
    impl = wrap("gn", tf.group_norm_detached_stats)
    for kind in KINDS:
        r = check(impl, GN_SHAPE, G2, "float32", kind)
        assert statuses(r) == {"forward": PASS, "grad_input": FAIL, "grad_weight": PASS, "grad_bias": PASS}, kind


def test_interleaved_groups_fail_forward_unless_groups_are_one_or_all_channels():
    impl = wrap("gn", tf.group_norm_channels_interleaved)
    for g in (2, 3):
        assert check(impl, GN_SHAPE, OpParams(groups=g), "float32", "normal")["forward"].status == FAIL
    for g in (1, 6):  # one group, or one channel per group: the same grouping either way
        assert set(statuses(check(impl, GN_SHAPE, OpParams(groups=g), "float32", "normal")).values()) == {PASS}


def test_layer_norm_over_last_axis_only_fails_with_two_normalized_dims():
    impl = wrap("ln", tf.layer_norm_last_axis_only)
    r = check(impl, (2, 3, 7, 9), OpParams(normalized_ndim=2), "float32", "normal")
    assert r["forward"].status == FAIL
    assert r["forward"].comparison.mismatched_pct > 50
    assert set(statuses(check(impl, (2, 3, 7, 9), OpParams(normalized_ndim=1), "float32", "normal")).values()) == {PASS}


def test_inverted_momentum_fails_running_mean_not_train_forward():
    r = check(wrap("bn", tf.batch_norm_momentum_inverted), (2, 3, 5, 5), bn("train"), "float32", "normal")
    assert r["running_mean"].status == FAIL
    assert r["running_var"].status == FAIL
    assert [r[c].status for c in ("forward", *GRADS)] == [PASS] * 4  # training normalizes with the batch


def test_biased_running_variance_fails_running_var_only():
    r = check(wrap("bn", tf.batch_norm_biased_running_var), (2, 3, 5, 5), bn("train"), "float32", "normal")
    assert statuses(r) == {
        "running_mean": PASS,
        "running_var": FAIL,
        "forward": PASS,
        "grad_input": PASS,
        "grad_weight": PASS,
        "grad_bias": PASS,
    }


def test_eval_with_batch_statistics_fails_eval_forward_only():
    impl = wrap("bn", tf.batch_norm_eval_uses_batch_stats)
    assert set(statuses(check(impl, (2, 3, 5, 5), bn("train"), "float32", "normal")).values()) == {PASS}
    r = check(impl, (2, 3, 5, 5), bn("eval"), "float32", "normal")
    assert r["forward"].status == FAIL
    assert r["running_mean"].status == PASS
    assert r["running_var"].status == PASS


def test_rms_norm_that_subtracts_the_mean_fails():
    impl = wrap("rms", tf.rms_norm_mean_subtracted)
    for kind in ("normal", "large_mean"):
        r = check(impl, (2, 5, 33), OpParams(normalized_ndim=1), "float32", kind)
        assert r["forward"].status == FAIL
    assert (
        check(impl, (2, 5, 33), OpParams(normalized_ndim=1), "float32", "large_mean")[
            "forward"
        ].comparison.mismatched_pct
        == 100
    )


def test_instance_norm_with_batch_statistics_fails_unless_batch_is_one():
    impl = wrap("in", tf.instance_norm_as_batch_norm)
    assert check(impl, (3, 4, 5, 5), OpParams(), "float32", "normal")["forward"].status == FAIL
    assert set(statuses(check(impl, (1, 4, 5, 5), OpParams(), "float32", "normal")).values()) == {PASS}


@pytest.mark.parametrize("op", OP_NAMES)
def test_every_buggy_fixture_fails_somewhere_in_a_full_run(op):
    fw = FixtureFramework({op: BUGGY[op]})
    opts = Options(ops=(op,), dtypes=("float32",), shapes=CORRECT_SHAPES[op])
    results = list(run(plan(opts, [fw]), opts))
    failing = {r.case.impl for r in results if r.status == FAIL}
    assert failing == {f"fixtures.{fn.__name__}" for fn in BUGGY[op]}
    assert not [r for r in results if r.status == ERROR]


# -- the built-in adapter ----------------------------------------------------------------


@pytest.fixture(scope="module")
def fw():
    return load("torch")


def test_load_gives_the_torch_framework(fw):
    assert fw.name == "torch"
    assert fw.default_eps("gn", "float32") == 1e-5
    assert fw.default_eps("rms", "float16") == float(np.finfo(np.float32).eps)
    assert fw.default_eps("rms", "float64") == float(np.finfo(np.float64).eps)
    assert fw.default_momentum("bn") == 0.1
    for op in OP_NAMES:
        assert [i.name for i in fw.implementations(op)] == [FUNCTIONAL_NAMES[op], MODULE_NAMES[op]]
        assert all(i.framework == "torch" and i.op == op for i in fw.implementations(op))


@pytest.mark.parametrize("op", OP_NAMES)
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_builtin_implementations_return_every_check_in_the_case_dtype(fw, op, dtype):
    for shape, params in OPS[op].default_cases():
        problem = problem_for(op, shape, params, dtype, "normal")
        expected = reference(problem)
        for impl in fw.implementations(op):
            out = impl.run(problem, "contiguous", "cpu")
            assert isinstance(out, RunOutput)
            assert set(out.values) == set(expected) == set(out.dtypes), (impl.name, shape, params)
            for c, want in expected.items():
                assert out.values[c].shape == want.shape
                assert out.values[c].dtype == np.float64
                assert out.dtypes[c] == dtype, (impl.name, shape, c)


def test_expected_checks_follow_the_params(fw):
    def keys(op, shape, params):
        return set(
            fw.implementations(op)[0]
            .run(problem_for(op, shape, params, "float32", "normal"), "contiguous", "cpu")
            .values
        )

    base = {"forward", "grad_input"}
    assert keys("rms", (2, 6, 32), OpParams(normalized_ndim=1, affine=False)) == base
    assert keys("rms", (2, 6, 32), OpParams(normalized_ndim=1)) == base | {"grad_weight"}
    assert keys("in", (2, 4, 6, 6), OpParams(affine=False)) == base
    assert keys("in", (3, 4, 5, 5), bn("eval")) == base | set(GRADS[1:]) | {"running_mean", "running_var"}
    assert keys("bn", (8, 5), bn("train")) == base | set(GRADS[1:]) | {"running_mean", "running_var"}


def test_channels_last_only_for_4d_and_5d(fw):
    for op in OP_NAMES:
        for impl in fw.implementations(op):
            assert impl.layouts((5, 4)) == ("contiguous",)
            assert impl.layouts((2, 3, 10)) == ("contiguous",)
            assert impl.layouts((2, 3, 4, 5)) == ("contiguous", "channels_last")
            assert impl.layouts((2, 3, 2, 3, 4)) == ("contiguous", "channels_last")
            assert impl.layouts((1, 2, 3, 4, 5, 6)) == ("contiguous",)


def test_channels_last_layout_reaches_the_implementation(fw):
    seen = []

    def bind(p, device):
        def forward(x, train):
            seen.append(x.is_contiguous(memory_format=torch.channels_last))
            return tf.group_norm(x, p.params.groups)

        return Bound(forward)

    impl = TorchImplementation("gn", "probe", bind)
    problem = problem_for("gn", GN_SHAPE, G2, "float32", "normal")
    impl.run(problem, "channels_last", "cpu")
    impl.run(problem, "contiguous", "cpu")
    assert seen == [True, False]


@pytest.mark.parametrize("op", OP_NAMES)
def test_builtin_full_run_passes_contiguous(fw, op):
    opts = Options(ops=(op,), dtypes=("float32", "float64"), kinds=("normal", "tiny_scale"))
    units = plan(opts, [fw])
    results = list(run(units, opts))
    assert len({r.case for r in results}) == sum(len(u.runs) for u in units) > 0
    contiguous = [r for r in results if r.case.layout == "contiguous"]
    assert contiguous
    assert {r.status for r in contiguous} == {PASS}
    # channels-last rows pass too, or fail only where a documented defect explains it
    for r in results:
        if r.case.layout == "channels_last" and r.status != PASS:
            assert r.status == KNOWN, (r.case, r.check, r.message)
            assert fw.known_issue(r.case, r.check) is not None
            assert r.message.startswith("known defect: ")


def _case(op, shape, params, dtype="float32", kind="normal", layout="contiguous", device="cpu"):
    return Case(op, "torch", FUNCTIONAL_NAMES[op], shape, params, dtype, kind, layout, device)


def test_no_known_issue_for_float32_contiguous_normal_cases(fw):
    for op in OP_NAMES:
        for shape, params in OPS[op].default_cases():
            for c in ("forward", *GRADS, "running_mean", "running_var"):
                assert fw.known_issue(_case(op, shape, params), c) is None, (op, shape, c)
                assert fw.known_issue(_case(op, shape, params, "float64", "large_mean"), c) is None


def test_known_issues_are_matched_narrowly(fw):
    gn = (GN_SHAPE, G2)
    # group norm, channels-last, large mean (and constant) on CPU
    for kind in ("large_mean", "constant"):
        assert fw.known_issue(_case("gn", *gn, kind=kind, layout="channels_last"), "forward") is not None
    assert fw.known_issue(_case("gn", *gn, kind="large_mean"), "forward") is None
    assert fw.known_issue(_case("gn", *gn, kind="normal", layout="channels_last"), "forward") is None
    assert fw.known_issue(_case("gn", *gn, kind="large_mean", layout="channels_last", device="cuda"), "forward") is None
    assert (
        fw.known_issue(
            _case("ln", (2, 3, 7, 9), OpParams(normalized_ndim=2), kind="large_mean", layout="channels_last"), "forward"
        )
        is None
    )
    # instance norm, batch of 1, channels-last gradients
    one = ((1, 4, 5, 5), OpParams())
    assert fw.known_issue(_case("in", *one, layout="channels_last"), "grad_input") is not None
    assert fw.known_issue(_case("in", *one, layout="channels_last", device="cuda:0"), "grad_input") is None
    assert fw.known_issue(_case("in", *one, layout="channels_last"), "forward") is None
    assert fw.known_issue(_case("in", *one), "grad_input") is None
    assert fw.known_issue(_case("in", (3, 4, 5, 5), OpParams(), layout="channels_last"), "grad_input") is None
    assert fw.known_issue(_case("bn", *one, layout="channels_last"), "grad_input") is None
    # batch norm in half precision, every check, CPU only
    bn_case = ((2, 3, 5, 5), bn("train"))
    for c in ("forward", "grad_input", "running_mean"):
        assert fw.known_issue(_case("bn", *bn_case, dtype="float16"), c) is not None
    assert fw.known_issue(_case("bn", *bn_case, dtype="bfloat16"), "forward") is not None
    assert fw.known_issue(_case("bn", *bn_case, dtype="float16", device="cuda"), "forward") is None
    assert fw.known_issue(_case("bn", *bn_case, dtype="float32"), "forward") is None
    # layer/group norm in half precision: gradients only
    ln = ((2, 5, 33), OpParams(normalized_ndim=1))
    assert fw.known_issue(_case("ln", *ln, dtype="float16"), "grad_input") is not None
    assert fw.known_issue(_case("ln", *ln, dtype="float16"), "forward") is None
    assert fw.known_issue(_case("rms", *ln, dtype="float16"), "grad_input") is None


# -- the engine around implementations ---------------------------------------------------


def _snapshot(problem):
    arrays = {
        "x": problem.x,
        "dy": problem.dy,
        "weight": problem.weight,
        "bias": problem.bias,
        "running_mean": problem.running_mean,
        "running_var": problem.running_var,
    }
    arrays.update({f"step{i}": s for i, s in enumerate(problem.steps)})
    return {k: None if a is None else a.copy() for k, a in arrays.items()}


@pytest.mark.parametrize(
    ("op", "shape", "params"),
    [
        ("bn", (2, 3, 5, 5), bn("train")),
        ("bn", (2, 3, 5, 5), bn("eval")),
        ("in", (3, 4, 5, 5), bn("train")),
        ("in", (3, 4, 5, 5), bn("eval")),
        ("gn", GN_SHAPE, G2),
        ("ln", (2, 3, 7, 9), OpParams(normalized_ndim=2)),
        ("rms", (2, 3, 8, 8), OpParams(normalized_ndim=2)),
    ],
)
def test_implementations_leave_the_problem_unchanged(fw, op, shape, params):
    problem = problem_for(op, shape, params, "float32", "normal")
    before = _snapshot(problem)
    impls = [*fw.implementations(op), wrap(op, CORRECT[op]), *(wrap(op, fn) for fn in BUGGY[op])]
    for impl in impls:
        for layout in impl.layouts(shape):
            impl.run(problem, layout, "cpu")
    after = _snapshot(problem)
    assert before.keys() == after.keys()
    for k, a in before.items():
        if a is None:
            assert after[k] is None
        else:
            np.testing.assert_array_equal(after[k], a, err_msg=k)
    # and the running statistics a run starts from are still PyTorch's initial ones
    if params.running_stats:
        assert (problem.running_mean == 0).all() and (problem.running_var == 1).all()


class Raising(Implementation):
    framework = "fixtures"

    def __init__(self, op, exc):
        self.op, self.name, self.exc = op, "raising", exc

    def run(self, problem, layout, device):
        raise self.exc


def _engine_inputs(op="gn", shape=GN_SHAPE, params=G2, dtype="float32"):
    problem = problem_for(op, shape, params, dtype, "normal")
    expected = reference(problem)
    return problem, expected, witness_errors(problem, expected)


def test_raising_implementation_is_an_error_row():
    problem, expected, errs = _engine_inputs()
    impl = Raising("gn", ValueError("weights are wrong\nsecond line of detail"))
    case = Case("gn", "fixtures", impl.name, GN_SHAPE, G2, "float32", "normal")
    rows = list(check_case(case, impl, problem, expected, errs, Options(ops=("gn",), dtypes=("float32",))))
    assert len(rows) == 1
    assert (rows[0].check, rows[0].status, rows[0].message) == (RUN, ERROR, "ValueError: weights are wrong")
    assert rows[0].case == case


def test_run_goes_on_after_an_implementation_raises(fw):
    opts = Options(ops=("gn",), dtypes=("float32",), kinds=("normal",))
    boom = TorchImplementation("gn", "boom", lambda p, d: Bound(lambda x, train: tf.group_norm(x, 0)))
    good = wrap("gn", tf.group_norm)
    unit = Unit("gn", GN_SHAPE, G2, "float32", "normal", fw)
    for impl in (boom, good, boom):
        unit.runs.append((Case("gn", "torch", impl.name, GN_SHAPE, G2, "float32", "normal"), impl))
    results = list(run([unit], opts))
    assert [(r.case.impl, r.check, r.status) for r in results] == [
        ("boom", RUN, ERROR),
        *((good.name, c, PASS) for c in ("forward", *GRADS)),
        ("boom", RUN, ERROR),
    ]
    assert results[0].message.startswith("ZeroDivisionError: ")


def test_missing_gradient_is_an_error_row():
    def bind(p, device):
        w = torch.tensor(p.weight, dtype=torch.float32, requires_grad=True)  # never used: no gradient
        return Bound(lambda x, train: tf.group_norm(x, p.params.groups), weight=w)

    problem, expected, errs = _engine_inputs()
    case = Case("gn", "fixtures", "no-grad", GN_SHAPE, G2, "float32", "normal")
    rows = list(
        check_case(
            case,
            TorchImplementation("gn", "no-grad", bind),
            problem,
            expected,
            errs,
            Options(ops=("gn",), dtypes=("float32",)),
        )
    )
    assert [(r.check, r.status, r.message) for r in rows] == [(RUN, ERROR, "RuntimeError: no grad weight was produced")]


def test_dtype_not_implemented_is_unsupported():
    def bind(p, device):
        def forward(x, train):
            raise RuntimeError("\"group_norm\" not implemented for 'Half'\nmore")

        return Bound(forward)

    impl = TorchImplementation("gn", "half-less", bind)
    problem, expected, errs = _engine_inputs(dtype="float16")
    with pytest.raises(Unsupported, match="not implemented for 'Half'"):
        impl.run(problem, "contiguous", "cpu")
    case = Case("gn", "torch", impl.name, GN_SHAPE, G2, "float16", "normal")
    for explicit, status in ((False, SKIP), (True, ERROR)):
        opts = Options(ops=("gn",), dtypes=("float16",), explicit_dtypes=explicit)
        rows = list(check_case(case, impl, problem, expected, errs, opts))
        assert [(r.check, r.status) for r in rows] == [(RUN, status)]
        assert rows[0].message == "float16 not supported: \"group_norm\" not implemented for 'Half'"


def test_other_runtime_errors_are_not_unsupported():
    impl = TorchImplementation("gn", "bad", lambda p, d: Bound(lambda x, train: x.view(-1, 7, 13)))
    problem, _, _ = _engine_inputs()
    with pytest.raises(RuntimeError, match="invalid for input of size"):
        impl.run(problem, "contiguous", "cpu")


# -- devices -------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_cuda_refused_without_a_device(fw):
    assert fw.device_problem("cpu") is None
    assert fw.device_problem("cuda") == "torch sees no CUDA device"
    assert fw.device_problem("mps") == "unknown device 'mps'"


@pytest.mark.gpu
def test_gn_and_bn_on_cuda(fw):
    assert fw.device_problem("cuda") is None
    opts = Options(
        ops=("gn", "bn"), dtypes=("float32", "float64"), kinds=("normal", "large_mean", "tiny_scale"), device="cuda"
    )
    results = list(run(plan(opts, [fw]), opts))
    assert results
    assert {r.case.device for r in results} == {"cuda"}
    bad = [(r.case, r.check, r.message) for r in results if r.status not in (PASS, KNOWN)]
    assert bad == []
    # the fixtures run on the device too
    for op in ("gn", "bn"):
        shape, params = OPS[op].default_cases()[0]
        r = check(wrap(op, CORRECT[op]), shape, params, "float32", "normal", device="cuda")
        assert set(statuses(r).values()) == {PASS}
    assert TORCH.device_problem("cuda") is None


# -- the conventions declared for PyTorch, against the installed torch ----------------------


def _default(fn, name):
    import inspect

    return inspect.signature(fn).parameters[name].default


def test_declared_eps_and_momentum_are_torchs_defaults():
    from normcheck.frameworks import CONVENTIONS

    conv = CONVENTIONS["torch"]
    for cls in (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d):
        m = cls(3)
        assert (m.eps, m.momentum) == (conv["bn"].eps, conv["bn"].momentum)
    assert torch.nn.InstanceNorm2d(3).eps == conv["in"].eps
    assert torch.nn.LayerNorm(4).eps == conv["ln"].eps
    assert torch.nn.GroupNorm(1, 4).eps == conv["gn"].eps
    assert _default(torch.nn.functional.rms_norm, "eps") is None  # MACHINE_EPS
    assert _default(torch.nn.functional.batch_norm, "momentum") == conv["bn"].momentum


def test_declared_affine_and_groups_defaults():
    import inspect

    from normcheck.frameworks import CONVENTIONS

    conv = CONVENTIONS["torch"]
    m = torch.nn.InstanceNorm2d(3)
    assert not m.affine and not m.track_running_stats and "off" in conv["in"].affine
    assert torch.nn.BatchNorm2d(3).affine and "on" in conv["bn"].affine
    no_default = inspect.signature(torch.nn.GroupNorm).parameters["num_groups"].default is inspect.Parameter.empty
    assert no_default and conv["gn"].groups is None


def test_declared_running_variance_is_unbiased_by_measurement():
    from normcheck.frameworks import CONVENTIONS

    x = torch.randn(6, 2, dtype=torch.float64)
    m = torch.nn.BatchNorm1d(2, momentum=1.0).double()
    m(x)
    unbiased = x.var(dim=0, unbiased=True)
    assert torch.allclose(m.running_var, unbiased)
    assert CONVENTIONS["torch"]["bn"].running_var == "unbiased"
