"""The ONNX Runtime adapter: its verdicts end to end, and its conventions measured against the
installed onnx schemas and ORT's behaviour."""

from __future__ import annotations

from dataclasses import replace

import pytest
from _require import require

ort = require("onnxruntime")
onnx = require("onnxruntime", "onnx")

import numpy as np
from onnx import TensorProto, defs, helper

from normcheck.conventions import BIASED, CHANNELS_FIRST, NEW, OLD, UNBIASED
from normcheck.frameworks import load
from normcheck.frameworks.base import Unsupported
from normcheck.frameworks.onnxruntime import adapter
from normcheck.frameworks.onnxruntime.facts import ONNXRUNTIME
from normcheck.ops import OPS, OpParams
from normcheck.reference import reference
from normcheck.verify.inputs import make_problem
from normcheck.verify.local import check_case, run
from normcheck.verify.plan import Options, plan
from normcheck.verify.records import ERROR, FAIL, KNOWN, PASS, RUN, SKIP, Case
from normcheck.verify.tolerance import compare, tolerance_for, witness_errors

OP_NAMES = ("bn", "ln", "in", "gn", "rms")
GRADS = ("grad_input", "grad_weight", "grad_bias")
DTYPES = ("float64", "float32", "float16", "bfloat16")
# (op, dtype) pairs ORT 1.31's CPU provider has no kernel for
NO_KERNEL = {("bn", "bfloat16"), ("in", "float64"), ("in", "bfloat16"), ("gn", "bfloat16"), ("rms", "bfloat16")}
STASH_DOUBLE_NAME = "onnx.GroupNormalization(stash_type=DOUBLE)"


@pytest.fixture(scope="module")
def fw():
    return load("onnxruntime")


def problem(fw, op, shape, params, dtype="float32", kind="normal", momentum=None):
    s = fw.settings(op, dtype, momentum=momentum)
    return make_problem(
        op, shape, params, dtype, kind, eps=s.eps, momentum=s.momentum, unbiased_running_var=s.unbiased_running_var
    )


def bn(mode: str) -> OpParams:
    return OpParams(mode=mode, running_stats=True)


def results_of(fw, ops, dtypes, kinds=("normal", "large_mean", "tiny_scale"), **kw):
    opts = Options(ops=ops, dtypes=dtypes, kinds=kinds, **kw)
    return list(run(plan(opts, [fw]), opts))


# -- end to end ------------------------------------------------------------------------


@pytest.mark.parametrize("op", OP_NAMES)
def test_every_case_passes_or_is_explained(fw, op):
    results = results_of(fw, (op,), DTYPES, kinds=("normal", "large_mean", "constant", "tiny_scale", "half_range"))
    assert results
    for r in results:
        assert r.status in (PASS, SKIP, KNOWN), (r.case, r.check, r.message)
        if r.status == KNOWN:
            assert fw.known_issue(r.case, r.check) is not None
        if r.check in GRADS:  # an inference runtime: gradients are skipped with the reason, never passed
            assert (r.status, r.message) == (SKIP, adapter.GRAD_REASON)
    passed = {(r.case.dtype, r.check) for r in results if r.status == PASS}
    for dtype in DTYPES:
        if (op, dtype) not in NO_KERNEL:
            assert (dtype, "forward") in passed
    if op == "bn":
        assert {("float32", "running_mean"), ("float32", "running_var"), ("float16", "running_var")} <= passed


def test_layer_norm_runs_in_bfloat16(fw):
    # LayerNormalization is the one op with a bfloat16 CPU kernel: bfloat16 goes in and out as bit patterns
    r = results_of(fw, ("ln",), ("bfloat16",), kinds=("normal",))
    forwards = [x for x in r if x.check == "forward"]
    assert forwards and {x.status for x in forwards} == {PASS}


@pytest.mark.parametrize(("op", "dtype"), sorted(NO_KERNEL))
def test_missing_kernels_are_skipped_with_the_reason(fw, op, dtype):
    shape, params = OPS[op].default_cases()[0]
    impl = fw.implementations(op)[0]
    p = problem(fw, op, shape, params, dtype)
    expected = reference(p)
    errs = witness_errors(p, expected)
    case = Case(op, "onnxruntime", impl.name, shape, params, dtype, "normal")
    op_type = adapter.OPSETS[op][0]
    for explicit, status in ((False, SKIP), (True, ERROR)):
        opts = Options(ops=(op,), dtypes=(dtype,), explicit_dtypes=explicit)
        rows = list(check_case(case, impl, p, expected, errs, opts))
        assert [(x.check, x.status) for x in rows] == [(RUN, status)]
        reason = f"onnxruntime has no CPU kernel for {op_type} in {dtype}"
        assert rows[0].message.startswith(f"{dtype} not supported: {reason}")
    if op in ("gn", "rms") and dtype == "bfloat16":  # no kernel of their own: ORT expands the ONNX function
        assert "its function body needs Mul(" in rows[0].message


def test_instance_norm_with_running_statistics_is_a_skip(fw):
    results = results_of(fw, ("in",), ("float32",), kinds=("normal",))
    tracked = [r for r in results if r.case.params.running_stats]
    assert tracked and all((r.check, r.status) == (RUN, SKIP) for r in tracked)
    assert {r.message for r in tracked} == {"ONNX InstanceNormalization has no running statistics"}
    assert any(r.status == PASS for r in results if not r.case.params.running_stats)


def test_only_the_contiguous_layout(fw):
    for op in OP_NAMES:
        for impl in fw.implementations(op):
            for shape in ((5, 4), (2, 3, 10), (2, 3, 4, 5), (2, 3, 2, 3, 4)):
                assert impl.layouts(shape) == ("contiguous",)
    p = problem(fw, "ln", (2, 5, 33), OpParams(normalized_ndim=1))
    with pytest.raises(ValueError, match="channels first only"):
        fw.implementations("ln")[0].run(p, "channels_last", "cpu")


def test_outputs_in_the_case_dtype_and_shapes(fw):
    for dtype in ("float64", "float32", "float16"):
        p = problem(fw, "bn", (2, 3, 5, 5), bn("train"), dtype)
        out = fw.implementations("bn")[0].run(p, "contiguous", "cpu")
        assert set(out.values) == {"forward", "running_mean", "running_var"}
        assert set(out.dtypes.values()) == {dtype}
        assert out.values["forward"].shape == p.shape and out.values["running_var"].shape == (3,)
    p = problem(fw, "rms", (2, 3, 8, 8), OpParams(normalized_ndim=2, affine=False), "bfloat16")
    with pytest.raises(Unsupported):
        fw.implementations("rms")[0].run(p, "contiguous", "cpu")
    out = fw.implementations("ln")[0].run(
        problem(fw, "ln", (2, 3, 7, 9), OpParams(normalized_ndim=2), "bfloat16"), "contiguous", "cpu"
    )
    assert out.dtypes == {"forward": "bfloat16"}


def test_problem_is_left_unchanged(fw):
    p = problem(fw, "bn", (2, 3, 5, 5), bn("eval"))
    before = [a.copy() for a in (p.x, p.weight, p.bias, p.running_mean, p.running_var, *p.steps)]
    fw.implementations("bn")[0].run(p, "contiguous", "cpu")
    after = (p.x, p.weight, p.bias, p.running_mean, p.running_var, *p.steps)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


def test_sessions_are_cached(fw, monkeypatch):
    monkeypatch.setattr(adapter, "_SESSIONS", {})
    p = problem(fw, "gn", (2, 6, 5, 5), OpParams(groups=2))
    impl = fw.implementations("gn")[0]
    impl.run(p, "contiguous", "cpu")
    assert len(adapter._SESSIONS) == 1
    impl.run(problem(fw, "gn", (3, 12, 4, 4), OpParams(groups=2), kind="large_mean"), "contiguous", "cpu")
    assert len(adapter._SESSIONS) == 1  # the same op, attributes, dtype and rank: the same session
    impl.run(problem(fw, "gn", (3, 12, 4, 4), OpParams(groups=3)), "contiguous", "cpu")
    assert len(adapter._SESSIONS) == 2


# -- running statistics, and a broken variant caught ------------------------------------------


def test_wrong_momentum_fails_running_statistics(fw):
    # passing PyTorch's 0.1 unchanged (the weight of the new batch) where ONNX wants the old value's weight
    broken = adapter.OrtImplementation("bn", replace(ONNXRUNTIME["bn"], momentum_weights=NEW))
    opts = Options(ops=("bn",), dtypes=("float32",), kinds=("normal",), shapes=((2, 3, 5, 5),))
    units = plan(opts, [fw])
    for unit in units:
        unit.runs += [(replace(c, impl="broken"), broken) for c, _ in unit.runs]
    statuses = {(r.case.impl, r.case.params.mode, r.check): r.status for r in run(units, opts)}
    right = adapter.OrtImplementation("bn", ONNXRUNTIME["bn"]).name
    for mode in ("train", "eval"):
        for check in ("forward", "running_mean", "running_var"):
            assert statuses[(right, mode, check)] == PASS
            # training normalizes with the batch statistics: only its forward is right
            assert statuses[("broken", mode, check)] == (PASS if (mode, check) == ("train", "forward") else FAIL)


# -- conventions, against the installed onnx and ORT ----------------------------------------


def _schema(op: str):
    op_type, opset = adapter.OPSETS[op]
    return defs.get_schema(op_type, opset)


@pytest.mark.parametrize("op", OP_NAMES)
def test_conventions_match_the_schemas(op):
    conv = ONNXRUNTIME[op]
    op_type, opset = adapter.OPSETS[op]
    schema = _schema(op)
    assert schema.since_version == opset
    assert opset == max(s.since_version for s in defs.get_all_schemas_with_history() if s.name == op_type)
    assert conv.api == f"{op_type} (opset {opset})"
    assert np.float32(schema.attributes["epsilon"].default_value.f) == np.float32(conv.eps)
    assert conv.layout == CHANNELS_FIRST and conv.gradients is False
    assert [i.name for i in schema.inputs][1:] == list(adapter.PARAM_INPUTS[op])
    required = [i.name for i in schema.inputs if i.option == defs.OpSchema.FormalParameterOption.Single]
    if conv.affine.endswith("required inputs"):  # scale and bias
        assert required == [i.name for i in schema.inputs]
    else:  # "scale required": LayerNormalization's B is optional
        assert conv.affine.endswith("scale required") and required[:2] == ["X", adapter.PARAM_INPUTS[op][0]]
    if op == "bn":
        assert np.float32(schema.attributes["momentum"].default_value.f) == np.float32(conv.momentum)
    if op in ("ln", "gn", "rms"):
        assert schema.attributes["stash_type"].default_value.i == TensorProto.FLOAT
    if op == "gn":
        assert schema.attributes["num_groups"].required and conv.groups is None
        assert "`(C)`" in schema.inputs[1].description  # per-channel since opset 21 ...
        assert "`(num_groups)`" in defs.get_schema("GroupNormalization", 18).inputs[1].description  # ... not 18
    if op == "in":
        assert [o.name for o in schema.outputs] == ["output"] and conv.running_var is None


@pytest.mark.parametrize("op", OP_NAMES)
def test_models_use_the_ir_version_their_opset_introduced(op):
    attrs = (("epsilon", 1e-5),)
    spec = adapter.ModelSpec(op, attrs, "float32", 3, 1, ("Y",), "cpu")
    if op == "gn":
        spec = replace(spec, attributes=(*attrs, ("num_groups", 1)))
    model = adapter.build_model(spec)
    opset = adapter.OPSETS[op][1]
    want = min(row[1] for row in helper.VERSION_TABLE if row[2] >= opset)
    assert model.ir_version == want < onnx.IR_VERSION
    adapter.session(spec)  # ORT loads it


def _bn_step(momentum: float, x: np.ndarray, training: bool = True) -> dict:
    outputs = ("Y", "running_mean", "running_var") if training else ("Y",)
    attrs = (("epsilon", 0.0), ("momentum", momentum), ("training_mode", int(training)))
    spec = adapter.ModelSpec("bn", attrs, "float64", x.ndim, 1, outputs, "cpu")
    c = x.shape[1]
    feeds = {"X": x, "scale": np.ones(c), "B": np.zeros(c), "input_mean": np.zeros(c), "input_var": np.ones(c)}
    return adapter.run_model(spec, feeds, {"Y": x.shape, "running_mean": (c,), "running_var": (c,)})


def test_batch_norm_semantics_measured():
    # one channel holding 0 and 2: batch mean 1, biased variance 1, Bessel-corrected 2
    conv = ONNXRUNTIME["bn"]
    got = _bn_step(0.75, np.array([[0.0], [2.0]]))
    # running = momentum * running + (1 - momentum) * batch: 0.75 * 0 + 0.25 * 1 (0.75 if momentum were the new weight)
    measured_weights = {0.25: OLD, 0.75: NEW}[float(got["running_mean"][0])]
    # 0.75 * 1 + 0.25 * 1 with the biased variance, 0.75 + 0.25 * 2 with the unbiased one
    measured_var = {1.0: BIASED, 1.25: UNBIASED}[float(got["running_var"][0])]
    assert (conv.momentum_weights, conv.running_var) == (measured_weights, measured_var)
    # training mode normalizes the batch with its own (biased) statistics, not the running ones
    np.testing.assert_array_equal(got["Y"][:, 0], [-1.0, 1.0])
    # inference mode uses the running statistics it is given (mean 0, variance 1 here)
    np.testing.assert_array_equal(_bn_step(0.75, np.array([[0.0], [2.0]]), training=False)["Y"][:, 0], [0.0, 2.0])
    # channels first: statistics per axis 1
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)) + np.array([0.0, 10.0, -5.0])[None, :, None, None]
    np.testing.assert_allclose(_bn_step(0.9, x)["Y"].mean(axis=(0, 2, 3)), 0.0, atol=1e-12)


def test_default_eps_and_momentum(fw):
    for op in OP_NAMES:
        assert fw.default_eps(op, "float32") == 1e-5
    assert fw.default_momentum("bn") == pytest.approx(0.1)  # ONNX's 0.9 in PyTorch's meaning
    assert fw.settings("bn", "float32").framework_momentum == pytest.approx(0.9)


@pytest.mark.parametrize("op", ["ln", "rms"])
def test_float64_layer_and_rms_norm_compute_in_double_whatever_stash_type(op):
    x = np.random.default_rng(1).standard_normal((4, 3, 40))
    feeds = {"X": x, "Scale" if op == "ln" else "scale": np.ones(40)} | ({"B": np.zeros(40)} if op == "ln" else {})
    ys = []
    for stash in (TensorProto.FLOAT, TensorProto.DOUBLE):
        spec = adapter.ModelSpec(
            op, (("axis", -1), ("epsilon", 1e-5), ("stash_type", stash)), "float64", 3, 1, ("Y",), "cpu"
        )
        ys.append(adapter.run_model(spec, feeds, {"Y": x.shape})["Y"])
    np.testing.assert_array_equal(ys[0], ys[1])
    centered = x - x.mean(-1, keepdims=True) if op == "ln" else x
    want = centered / np.sqrt((centered**2).mean(-1, keepdims=True) + 1e-5)
    assert np.abs(ys[0] - want).max() < 1e-11  # double precision, not float32's 1e-7


# -- known issues: each cause reproduced, each matched narrowly --------------------------------


def test_float32_momentum_attribute_explains_float64_running_statistics(fw):
    p = problem(fw, "bn", (2, 3, 5, 5), bn("train"), "float64", "large_mean")
    got = fw.implementations("bn")[0].run(p, "contiguous", "cpu").values["running_mean"]
    tol = tolerance_for("float64", witness_errors(p, reference(p))["running_mean"])
    assert compare(got, reference(p)["running_mean"], tol).mismatched > 0
    stored = replace(p, momentum=1.0 - float(np.float32(0.9)))  # the momentum ONNX actually holds
    assert compare(got, reference(stored)["running_mean"], tol).mismatched == 0


def test_group_norm_variance_is_one_pass_in_float32_by_default(fw):
    # A two-pass variance is a mean of squares and never negative: NaN means E[x^2] - E[x]^2 < -eps.
    p = problem(fw, "gn", (4, 64, 8, 8), OpParams(groups=32), "float32", "large_mean")
    default, safe = fw.implementations("gn")
    assert safe.name == STASH_DOUBLE_NAME
    assert np.isnan(default.run(p, "contiguous", "cpu").values["forward"]).any()
    assert np.isfinite(safe.run(p, "contiguous", "cpu").values["forward"]).all()
    graph = adapter.build_model(
        adapter.ModelSpec("gn", (("epsilon", 1e-5), ("num_groups", 2)), "float32", 4, 1, ("Y",), "cpu")
    )
    assert [n.op_type for n in graph.graph.node] == ["GroupNormalization"]


def test_stash_type_double_is_the_safe_group_norm(fw):
    results = results_of(fw, ("gn",), ("float64", "float32", "float16"))
    results = [r for r in results if r.case.impl == STASH_DOUBLE_NAME]
    assert results
    for r in results:
        if r.check in GRADS:
            continue
        if r.case.dtype == "float64" and r.case.kind == "large_mean":  # one pass even in double
            assert r.status == KNOWN and "no setting avoids it for float64" in r.message
        else:
            assert r.status == PASS, (r.case, r.message)


def _case(op, shape, params, dtype="float32", kind="normal", device="cpu", impl="onnx.GroupNormalization"):
    return Case(op, "onnxruntime", impl, shape, params, dtype, kind, "contiguous", device)


def test_known_issues_are_matched_narrowly(fw):
    for op in OP_NAMES:
        for shape, params in OPS[op].default_cases():
            for c in ("forward", "running_mean", "running_var"):
                assert fw.known_issue(_case(op, shape, params), c) is None or op == "gn"
                assert fw.known_issue(_case(op, shape, params, "float16", "large_mean"), c) is None
    bn_train = ((2, 3, 5, 5), bn("train"))
    assert fw.known_issue(_case("bn", *bn_train, "float64", "large_mean"), "running_mean") is not None
    assert fw.known_issue(_case("bn", *bn_train, "float64", "normal"), "running_mean") is None
    assert fw.known_issue(_case("bn", *bn_train, "float32", "large_mean"), "running_mean") is None
    gn = ((2, 6, 5, 5), OpParams(groups=2))
    assert "one pass" in fw.known_issue(_case("gn", *gn, "float64", "large_mean"), "forward").cause
    assert "stash_type" in fw.known_issue(_case("gn", *gn, "float64", "normal"), "forward").cause
    # the stash_type=DOUBLE variant is spared the stash_type issues, not the one-pass one
    safe = "onnx.GroupNormalization(stash_type=DOUBLE)"
    assert fw.known_issue(_case("gn", *gn, "float64", "normal", impl=safe), "forward") is None
    assert fw.known_issue(_case("gn", *gn, "float32", "large_mean", impl=safe), "forward") is None
    assert fw.known_issue(_case("gn", *gn, "float64", "large_mean", impl=safe), "forward") is not None
    assert fw.known_issue(_case("gn", *gn, "float64", "normal", device="cuda"), "forward") is None
    assert (
        fw.known_issue(_case("ln", (2, 5, 33), OpParams(normalized_ndim=1), "float32", "large_mean"), "forward") is None
    )


# -- errors and devices ---------------------------------------------------------------------


def test_only_not_implemented_becomes_unsupported():
    spec = adapter.ModelSpec("in", (("epsilon", 1e-5),), "float64", 4, 1, ("Y",), "cpu")
    assert adapter.unsupported_reason(RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : bad"), spec) is None
    with pytest.raises(Unsupported, match=r"^onnxruntime has no CPU kernel for InstanceNormalization in float64$"):
        adapter.session(spec)


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="checks the message without CUDA")
def test_cuda_refused_without_the_provider(fw):
    assert fw.device_problem("cpu") is None
    assert fw.device_problem("cuda") == "onnxruntime has no CUDAExecutionProvider here"
    assert fw.device_problem("cuda:1") == "onnxruntime has no CUDAExecutionProvider here"
    assert fw.device_problem("mps") == "unknown device 'mps'"


@pytest.mark.gpu
@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(), reason="needs CUDA in ORT")
def test_runs_on_cuda(fw):
    assert fw.device_problem("cuda") is None
    results = results_of(fw, OP_NAMES, ("float32",), kinds=("normal",), device="cuda")
    assert results and {r.case.device for r in results} == {"cuda"}
    assert not [(r.case, r.check, r.message) for r in results if r.status in (FAIL, ERROR)]
