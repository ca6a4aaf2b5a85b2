"""The ONNX Runtime bench target: one session per model and thread count, inputs bound once,
forward only."""

from __future__ import annotations

from _bench_cases import OP_CASES
from _require import require

ort = require("onnxruntime")

import numpy as np
import pytest
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from normcheck.bench.inputs import bench_problem
from normcheck.bench.records import BACKWARD, FORWARD
from normcheck.bench.timer import TimerSettings, measure_host
from normcheck.frameworks import bench_module
from normcheck.frameworks.base import Unsupported
from normcheck.frameworks.onnxruntime.adapter import GRAD_REASON, framework
from normcheck.names import OP_NAMES
from normcheck.ops import OpParams
from normcheck.reference import reference

target = bench_module("onnxruntime")

CASES = OP_CASES
TOLERANCE = {"float32": 1e-4, "float16": 2e-2}


def impls(op: str) -> list:
    return framework().implementations(op)


def build(op, shape, params, dtype="float32", pass_=FORWARD, device="cpu", impl=None):
    problem = bench_problem(op, shape, params, dtype)
    return problem, target.build(impl or impls(op)[0], problem, pass_, "session", device)


@pytest.fixture(autouse=True)
def one_thread():
    target.set_threads(1)
    yield
    target.set_threads(1)


def test_one_session_variant_in_either_mode():
    assert target.MODES == {"eager": ("session",), "compiled": ("session",)}
    assert target.layout(impls("ln")[0], (2, 3)) == "contiguous"


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("case", list(CASES))
def test_forward_computes_the_op(case, dtype):
    op, shape, params = CASES[case]
    for impl in [i for i in impls(op) if not i.requires]:  # both GroupNormalization variants for gn; not FP8's
        problem, t = build(op, shape, params, dtype, impl=impl)
        assert not t.compiled and t.mode == "session" and t.memory is None
        out = t.call()
        t.sync(out)
        y = out["Y"].numpy().astype(np.float64)
        assert y.shape == shape and np.isfinite(y).all()
        expected = reference(problem)
        np.testing.assert_allclose(y, expected["forward"], rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_batch_norm_in_training_also_outputs_the_running_statistics(dtype):
    problem, t = build(*CASES["bn train"], dtype)
    out = t.call()
    assert set(out) == {"Y", "running_mean", "running_var"}
    expected = reference(problem)  # ONNX's running variance is the population variance
    rm = out["running_mean"].numpy().astype(np.float64)
    assert rm.shape == (6,)
    np.testing.assert_allclose(rm, expected["running_mean"], atol=TOLERANCE[dtype])
    _, t_eval = build(*CASES["bn eval"], dtype)
    assert set(t_eval.call()) == {"Y"}


def test_calls_reuse_the_bound_buffers():
    _, t = build(*CASES["gn"])
    first = t.call()["Y"].numpy().copy()
    second = t.call()
    assert second["Y"].data_ptr() == t.call()["Y"].data_ptr()
    np.testing.assert_array_equal(second["Y"].numpy(), first)


def test_the_timer_runs_it():
    _, t = build(*CASES["ln"])
    m = measure_host(t, TimerSettings(min_time=0.005, max_time=0.02, warmup=0.002))
    assert m.samples and all(s > 0 for s in m.samples)


@pytest.mark.parametrize("case", list(CASES))
def test_backward_is_unsupported(case):
    op, shape, params = CASES[case]
    with pytest.raises(Unsupported, match="inference only") as info:
        build(op, shape, params, pass_=BACKWARD)
    assert str(info.value) == GRAD_REASON


def test_a_dtype_without_a_kernel_is_unsupported_with_the_reason():
    with pytest.raises(Unsupported, match="no CPU kernel for BatchNormalization in bfloat16"):
        build(*CASES["bn train"], "bfloat16")
    with pytest.raises(Unsupported, match="no CPU kernel for InstanceNormalization in float64"):
        build(*CASES["in"], "float64")


def test_bfloat16_runs_where_there_is_a_kernel():
    _, t = build(*CASES["ln"], "bfloat16")
    out = t.call()
    assert out["Y"].data_type() == "tensor(bfloat16)" and out["Y"].shape() == [3, 4, 8]


def test_instance_norm_with_running_statistics_is_unsupported():
    with pytest.raises(Unsupported, match="no running statistics"):
        build("in", (2, 6, 4, 4), OpParams(mode="train", running_stats=True))


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available here")
def test_cuda_without_its_provider_is_unsupported():
    with pytest.raises(Unsupported, match="CUDAExecutionProvider"):
        build(*CASES["ln"], device="cuda")


def test_set_threads_applies_to_new_sessions():
    assert target.set_threads(2) == 2
    _, t = build(*CASES["gn"])
    session = t.keep[0]
    assert isinstance(session, ort.InferenceSession)
    options = session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert target.set_threads(1) == 1
    _, t1 = build(*CASES["gn"])
    assert t1.keep[0].get_session_options().intra_op_num_threads == 1


def test_sessions_are_cached():
    _, a = build(*CASES["rms"])
    _, b = build(*CASES["rms"])
    assert a.keep[0] is b.keep[0]


def test_classify():
    assert target.classify(ort_errors.NotImplemented("[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : no kernel")) == "skip"
    oom = ort_errors.RuntimeException("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory")
    assert target.classify(oom) == "oom"
    assert target.classify(MemoryError()) == "oom"
    assert target.classify(ort_errors.Fail("[ONNXRuntimeError] : 1 : FAIL : something else")) is None
    assert target.classify(ValueError("x")) is None


def test_other_implementations_are_refused():
    class Other:
        name = "torch.nn.functional.layer_norm"

    problem = bench_problem(*CASES["ln"], "float32")
    with pytest.raises(Unsupported, match="not an ONNX Runtime implementation"):
        target.build(Other(), problem, FORWARD, "session", "cpu")


def test_every_op_has_a_case():
    assert {c[0] for c in CASES.values()} == set(OP_NAMES)  # bench times the five ops, not the fused ones
